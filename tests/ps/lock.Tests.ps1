# Pester 5: lock: one run per host, expiry, release only by the holder.
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

    It 'lets a run take an expired lock' {
        $null = & $script:Payload -RunId 'old-run' -Action 'take' -ExpiresMinutes 1
        $lockFile = Join-Path -Path $env:ProgramData -ChildPath 'wuremote\lock.json'
        $record = Get-Content -LiteralPath $lockFile -Raw | ConvertFrom-Json
        $record.expires_utc = [DateTime]::UtcNow.AddMinutes(-5).ToString('o')
        [System.IO.File]::WriteAllText($lockFile, ($record | ConvertTo-Json))
        (Invoke-WuTestStep -Path $script:Payload -Parameters @{ Action = 'take' }).ExitCode | Should -Be 0
    }

    It 'releases only for the holder' {
        $null = & $script:Payload -RunId 'holder' -Action 'take'
        (Invoke-WuTestStep -Path $script:Payload -Parameters @{ Action = 'release' }).ExitCode | Should -Be 4
        $null = & $script:Payload -RunId 'holder' -Action 'release'
        $LASTEXITCODE | Should -Be 0
    }
}
