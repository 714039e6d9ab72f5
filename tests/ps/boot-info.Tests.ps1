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

    It 'reports PendingFileRenameOperations on its own, never as a reason to restart' {
        $fixture = Get-WuFixture -Scenario 'healthy'
        $key = 'HKLM:\SYSTEM\CurrentControlSet\Control\Session Manager'
        $fixture.cmdlets.registry.$key | Add-Member -NotePropertyName 'PendingFileRenameOperations' -NotePropertyValue @('\??\C:\ProgramData\Agent\new.dll', '')
        Set-WuFixtureMocks -Fixture $fixture
        $run = Invoke-WuTestStep -Path $script:Payload
        $run.ExitCode | Should -Be 0
        $run.Result.facts.pending_file_rename | Should -BeTrue
        @($run.Result.facts.pending_reboot).Count | Should -Be 0
    }

    It 'lists the update agent''s and ConfigMgr''s own reboot state' {
        Set-WuFixtureMocks -Fixture (Get-WuFixture -Scenario 'healthy')
        Mock Get-WuUpdateAgentRebootRequired { $true }
        Mock Get-WuConfigMgrRebootPending { $true }
        $run = Invoke-WuTestStep -Path $script:Payload
        @($run.Result.facts.pending_reboot) | Should -Be @('wu-reboot-required', 'configmgr-reboot-pending')
    }
}
