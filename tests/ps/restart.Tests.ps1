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

    It 'treats a shutdown already scheduled (1190) as done' {
        Set-WuFixtureMocks -Fixture (Get-WuFixture -Scenario 'healthy')
        Mock Invoke-WuNative { [pscustomobject]@{ ExitCode = 1190; Output = @() } }
        (Invoke-WuTestStep -Path $script:Payload -Parameters @{ Reason = 'x' }).ExitCode | Should -Be 0
    }
}
