# Pester 5: detached-cleanup never touches a running step.
BeforeAll {
    . (Join-Path -Path $PSScriptRoot -ChildPath '_helpers.ps1')
    $script:Payload = New-WuTestPayload -Name 'detached-cleanup'
    $script:SavedProgramData = $env:ProgramData
}

AfterAll {
    $env:ProgramData = $script:SavedProgramData
}

Describe 'detached-cleanup' {
    BeforeEach {
        Set-WuFixtureMocks -Fixture (Get-WuFixture -Scenario 'healthy')
        Mock Unregister-ScheduledTask { $null }
        Mock Stop-ScheduledTask { $null }
        $script:Folder = Join-Path -Path $env:ProgramData -ChildPath 'wuremote\runs\pester\dism'
        $null = New-Item -ItemType Directory -Path $script:Folder -Force
    }

    It 'refuses (exit 4) while the step runs and stops nothing' {
        Mock Get-ScheduledTask { [pscustomobject]@{ State = 'Running' } }
        $status = @{ state = 'running'; pid = $PID; started = [DateTime]::UtcNow.ToString('o'); percent = 10; exit_code = $null; finished = $null; boot_utc = '2025-11-18T06:12:00.0000000Z'; error = '' }
        Set-Content -LiteralPath (Join-Path -Path $script:Folder -ChildPath 'status.json') -Value ($status | ConvertTo-Json) -Encoding UTF8
        $run = Invoke-WuTestStep -Path $script:Payload -Parameters @{ Step = 'dism' }
        $run.ExitCode | Should -Be 4
        Should -Invoke Unregister-ScheduledTask -Times 0 -Exactly
        Should -Invoke Stop-ScheduledTask -Times 0 -Exactly
    }

    It 'removes the task and the staged payload of a finished step, keeping its result' {
        Mock Get-ScheduledTask { [pscustomobject]@{ State = 'Ready' } }
        $status = @{ state = 'finished'; pid = 1; started = '2025-11-18T07:00:00.0000000Z'; percent = 100; exit_code = 0; finished = '2025-11-18T07:30:00.0000000Z'; boot_utc = '2025-11-18T06:12:00.0000000Z'; error = '' }
        Set-Content -LiteralPath (Join-Path -Path $script:Folder -ChildPath 'status.json') -Value ($status | ConvertTo-Json) -Encoding UTF8
        Set-Content -LiteralPath (Join-Path -Path $script:Folder -ChildPath 'step.ps1') -Value '# body' -Encoding UTF8
        $run = Invoke-WuTestStep -Path $script:Payload -Parameters @{ Step = 'dism' }
        $run.ExitCode | Should -Be 0
        Should -Invoke Unregister-ScheduledTask -Times 1 -Exactly
        Test-Path -LiteralPath (Join-Path -Path $script:Folder -ChildPath 'step.ps1') | Should -BeFalse
        Test-Path -LiteralPath (Join-Path -Path $script:Folder -ChildPath 'status.json') | Should -BeTrue
    }
}
