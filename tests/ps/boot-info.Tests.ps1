# Pester 5: boot-info reports the boot time and pending-reboot signals.
BeforeAll {
    . (Join-Path -Path $PSScriptRoot -ChildPath '_helpers.ps1')
    $script:Payload = New-WuTestPayload -Name 'boot-info'
    $script:SavedProgramData = $env:ProgramData
}

AfterAll {
    $env:ProgramData = $script:SavedProgramData
}

Describe 'boot-info' {
    It 'lists CBS RebootPending on a host with servicing pending' {
        Set-WuFixtureMocks -Fixture (Get-WuFixture -Scenario 'servicing-in-progress')
        $run = Invoke-WuTestStep -Path $script:Payload
        $run.ExitCode | Should -Be 0
        @($run.Result.facts.pending_reboot) | Should -Contain 'cbs-reboot-pending'
    }

    It 'lists nothing on a healthy host' {
        Set-WuFixtureMocks -Fixture (Get-WuFixture -Scenario 'healthy')
        $run = Invoke-WuTestStep -Path $script:Payload
        @($run.Result.facts.pending_reboot).Count | Should -Be 0
    }
}
