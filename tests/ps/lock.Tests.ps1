# Pester 5: lock: one run and controller per host, the lease, release only by the holder.
BeforeAll {
    . (Join-Path -Path $PSScriptRoot -ChildPath '_helpers.ps1')
    $script:Payload = New-WuTestPayload -Name 'lock'
    $script:SavedProgramData = $env:ProgramData
}

AfterAll {
    $env:ProgramData = $script:SavedProgramData
}

Describe 'lock' {
    BeforeEach {
        Set-WuFixtureMocks -Fixture (Get-WuFixture -Scenario 'healthy')
        $lockFile = Join-Path -Path $env:ProgramData -ChildPath 'wuremote\lock.json'
        if (Test-Path -LiteralPath $lockFile) {
            Remove-Item -LiteralPath $lockFile -Force
        }
    }

    It 'lets one run take the lock and refuses another (exit 4)' {
        (Invoke-WuTestStep -Path $script:Payload -Parameters @{ Action = 'take' }).ExitCode | Should -Be 0
        $other = & $script:Payload -RunId 'other-run' -Action 'take'
        $LASTEXITCODE | Should -Be 4
        $other.facts.holder.run_id | Should -Be 'pester'
    }

    It 'lets a run take a lock whose lease ran out on the performance counter' {
        $null = & $script:Payload -RunId 'old-run' -Action 'take' -ExpiresMinutes 1
        $lockFile = Join-Path -Path $env:ProgramData -ChildPath 'wuremote\lock.json'
        $record = Get-Content -LiteralPath $lockFile -Raw | ConvertFrom-Json
        $record.boot_marker | Should -Not -BeNullOrEmpty
        $record.renewed_tick_ms = [long]$record.renewed_tick_ms - 120000  # renewed two minutes ago, same boot
        $record.expires_utc = [DateTime]::UtcNow.AddHours(5).ToString('o')  # a clock stepped back: ignored
        [System.IO.File]::WriteAllText($lockFile, ($record | ConvertTo-Json))
        (Invoke-WuTestStep -Path $script:Payload -Parameters @{ Action = 'take' }).ExitCode | Should -Be 0
    }

    It 'keeps a live lease whatever expires_utc says (a clock stepped forward)' {
        $null = & $script:Payload -RunId 'live-run' -Action 'take' -ExpiresMinutes 60
        $lockFile = Join-Path -Path $env:ProgramData -ChildPath 'wuremote\lock.json'
        $record = Get-Content -LiteralPath $lockFile -Raw | ConvertFrom-Json
        $record.expires_utc = [DateTime]::UtcNow.AddHours(-5).ToString('o')
        [System.IO.File]::WriteAllText($lockFile, ($record | ConvertTo-Json))
        $null = & $script:Payload -RunId 'other-run' -Action 'take'
        $LASTEXITCODE | Should -Be 4
    }

    It 'expires an older lock.json without lease fields by its expires_utc' {
        $lockFile = Join-Path -Path $env:ProgramData -ChildPath 'wuremote\lock.json'
        $null = New-Item -ItemType Directory -Path (Split-Path -Path $lockFile -Parent) -Force
        $old = [ordered]@{ run_id = 'old-run'; taken_utc = [DateTime]::UtcNow.AddHours(-6).ToString('o')
            expires_utc = [DateTime]::UtcNow.AddMinutes(-5).ToString('o'); host = 'x' }
        [System.IO.File]::WriteAllText($lockFile, ($old | ConvertTo-Json))
        (Invoke-WuTestStep -Path $script:Payload -Parameters @{ Action = 'take' }).ExitCode | Should -Be 0
    }

    It 'refuses the same run from another controller and names it; the same controller reclaims' {
        $null = & $script:Payload -RunId 'pester' -Action 'take' -Controller 'aa11@elsewhere'
        $other = Invoke-WuTestStep -Path $script:Payload -Parameters @{ Action = 'take'; Controller = 'bb22@here' }
        $other.ExitCode | Should -Be 4
        ($other.Result.messages -join ' ') | Should -Match 'controller aa11@elsewhere'
        $again = Invoke-WuTestStep -Path $script:Payload -Parameters @{ Action = 'renew'; Controller = 'aa11@elsewhere' }
        $again.ExitCode | Should -Be 0
        $again.Result.facts.holder.renewals | Should -Be 1
    }

    It 'releases only for the holder' {
        $null = & $script:Payload -RunId 'holder' -Action 'take'
        (Invoke-WuTestStep -Path $script:Payload -Parameters @{ Action = 'release' }).ExitCode | Should -Be 4
        $null = & $script:Payload -RunId 'holder' -Action 'release'
        $LASTEXITCODE | Should -Be 0
    }
}
