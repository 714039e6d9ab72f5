# Pester 5: restart schedules shutdown.exe with a reason and returns the boot time before it.
BeforeAll {
    . (Join-Path -Path $PSScriptRoot -ChildPath '_helpers.ps1')
    $script:Payload = New-WuTestPayload -Name 'restart'
    $script:SavedProgramData = $env:ProgramData
}

AfterAll {
    $env:ProgramData = $script:SavedProgramData
}

Describe 'restart' {
    It 'schedules a restart with the reason as an argument and reports the boot time' {
        Set-WuFixtureMocks -Fixture (Get-WuFixture -Scenario 'healthy')
        $run = Invoke-WuTestStep -Path $script:Payload -Parameters @{ Reason = 'after reset-components' }
        $run.ExitCode | Should -Be 0
        $run.Result.facts.last_boot_utc | Should -Be '2025-11-18T06:12:00.0000000Z'
        Should -Invoke Invoke-WuNative -ParameterFilter { (Split-Path -Leaf $FilePath) -eq 'shutdown.exe' -and $ArgumentList -contains 'wuremote: after reset-components' -and $ArgumentList -contains '/r' } -Times 1 -Exactly
    }

    It 'aborts a shutdown someone else scheduled (1190) and issues its own restart again' {
        Set-WuFixtureMocks -Fixture (Get-WuFixture -Scenario 'healthy')
        $script:ShutdownCalls = 0
        Mock Invoke-WuNative {
            if ($ArgumentList -contains '/a') {
                return [pscustomobject]@{ ExitCode = 0; Output = @() }
            }
            $script:ShutdownCalls++
            $code = 0
            if ($script:ShutdownCalls -eq 1) {
                $code = 1190
            }
            [pscustomobject]@{ ExitCode = $code; Output = @() }
        }
        $run = Invoke-WuTestStep -Path $script:Payload -Parameters @{ Reason = 'x' }
        $run.ExitCode | Should -Be 0
        Should -Invoke Invoke-WuNative -ParameterFilter { $ArgumentList -contains '/a' } -Times 1 -Exactly
        Should -Invoke Invoke-WuNative -ParameterFilter { $ArgumentList -contains '/r' } -Times 2 -Exactly
        @($run.Result.changes | ForEach-Object -Process { $_.kind }) | Should -Contain 'scheduled-shutdown-aborted'
    }

    It 'fails when the scheduled shutdown cannot be replaced' {
        Set-WuFixtureMocks -Fixture (Get-WuFixture -Scenario 'healthy')
        Mock Invoke-WuNative -ParameterFilter { $ArgumentList -contains '/r' } { [pscustomobject]@{ ExitCode = 1190; Output = @() } }
        Mock Invoke-WuNative -ParameterFilter { $ArgumentList -contains '/a' } { [pscustomobject]@{ ExitCode = 1116; Output = @() } }
        (Invoke-WuTestStep -Path $script:Payload -Parameters @{ Reason = 'x' }).ExitCode | Should -Be 1
    }

    It 'waits on a shutdown already in progress (1115) without aborting it' {
        Set-WuFixtureMocks -Fixture (Get-WuFixture -Scenario 'healthy')
        Mock Invoke-WuNative { [pscustomobject]@{ ExitCode = 1115; Output = @() } }
        $run = Invoke-WuTestStep -Path $script:Payload -Parameters @{ Reason = 'x' }
        $run.ExitCode | Should -Be 0
        Should -Invoke Invoke-WuNative -ParameterFilter { $ArgumentList -contains '/a' } -Times 0 -Exactly
    }
}
