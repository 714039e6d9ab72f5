# Pester 5: diagnose returns, for each scenario, exactly the facts its fixture records.
BeforeAll {
    . (Join-Path -Path $PSScriptRoot -ChildPath '_helpers.ps1')
    $script:Payload = New-WuTestPayload -Name 'diagnose'
    $script:SavedProgramData = $env:ProgramData
}

AfterAll {
    $env:ProgramData = $script:SavedProgramData
}

Describe 'diagnose' {
    It 'reports the <Scenario> facts the fixture records' -ForEach @(
        @{ Scenario = 'healthy' }, @{ Scenario = 'stopped-services' }, @{ Scenario = 'disabled-services' },
        @{ Scenario = 'low-disk' }, @{ Scenario = 'wsus-unreachable' }, @{ Scenario = 'servicing-in-progress' },
        @{ Scenario = 'corrupt-download-cache' }
    ) {
        $fixture = Get-WuFixture -Scenario $Scenario
        Set-WuFixtureMocks -Fixture $fixture
        $run = Invoke-WuTestStep -Path $script:Payload -Parameters @{ ControllerUtc = $fixture.cmdlets.controller_utc }

        $run.ExitCode | Should -Be 0
        $facts = $run.Result.facts
        foreach ($name in @('wuauserv', 'bits', 'cryptsvc', 'msiserver', 'trustedinstaller', 'appidsvc', 'usosvc')) {
            $facts.services[$name].state | Should -Be $fixture.facts.services.$name.state
            $facts.services[$name].start_type | Should -Be $fixture.facts.services.$name.start_type
            $facts.services[$name].policy_start_type | Should -Be $fixture.facts.services.$name.policy_start_type
        }
        $facts.disk.low | Should -Be $fixture.facts.disk.low
        $facts.servicing.in_progress | Should -Be $fixture.facts.servicing.in_progress
        $facts.update_source.kind | Should -Be $fixture.facts.update_source.kind
        @($facts.pending_reboot) | Should -Be @($fixture.facts.pending_reboot)
        @($facts.update_failures | ForEach-Object -Process { $_.hresult }) | Should -Be @($fixture.facts.update_failures | ForEach-Object -Process { $_.hresult })
        $facts.unexpected_shutdowns_30d | Should -Be $fixture.facts.unexpected_shutdowns_30d
        $facts.powershell.language_mode | Should -Be $fixture.facts.powershell.language_mode
        $facts.powershell.execution_policies.LocalMachine | Should -Be $fixture.facts.powershell.execution_policies.LocalMachine
        @($facts.installed_kbs).Count | Should -Be @($fixture.facts.installed_kbs).Count
        @($facts.errors).Count | Should -Be 0
    }

    It 'refuses under Constrained Language, with the language mode, before reading anything' {
        Set-WuFixtureMocks -Fixture (Get-WuFixture -Scenario 'healthy')
        Mock Get-WuLanguageMode { 'ConstrainedLanguage' }
        $run = Invoke-WuTestStep -Path $script:Payload
        $run.ExitCode | Should -Be 1
        $run.Result.facts.language_mode | Should -Be 'ConstrainedLanguage'
        Should -Invoke Get-CimInstance -Times 0 -Exactly
    }

    It 'changes nothing on the host' {
        Set-WuFixtureMocks -Fixture (Get-WuFixture -Scenario 'healthy')
        Mock Set-Service { $null }
        Mock Stop-Service { $null }
        Mock Rename-Item { $null }
        $null = Invoke-WuTestStep -Path $script:Payload
        Should -Invoke Set-Service -Times 0 -Exactly
        Should -Invoke Stop-Service -Times 0 -Exactly
        Should -Invoke Rename-Item -Times 0 -Exactly
    }

    It 'keeps the other facts when one group cannot be read' {
        Set-WuFixtureMocks -Fixture (Get-WuFixture -Scenario 'healthy')
        Mock Get-WinEvent { throw 'The RPC server is unavailable' }
        $run = Invoke-WuTestStep -Path $script:Payload
        $run.ExitCode | Should -Be 0
        @($run.Result.facts.errors) -join ' ' | Should -Match 'update_failures'
        $run.Result.facts.disk | Should -Not -BeNullOrEmpty
    }

    It 'with a result marker writes the JSON line to the console, not an object to the pipeline' {
        Set-WuFixtureMocks -Fixture (Get-WuFixture -Scenario 'healthy')
        $output = & $script:Payload -RunId 'pester' -ResultMarker 'WUREMOTE-RESULT-1234'
        $LASTEXITCODE | Should -Be 0
        @($output | Where-Object -FilterScript { $null -ne $_ -and $_.PSObject.Properties.Name -contains 'wuremote_result' }).Count | Should -Be 0
    }
}
