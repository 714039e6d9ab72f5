# Pester 5: sfc is judged by the [SR] lines of CBS.log, not its console text.
BeforeAll {
    . (Join-Path -Path $PSScriptRoot -ChildPath '_helpers.ps1')
    $script:Payload = New-WuTestPayload -Name 'sfc'
    $script:SavedProgramData = $env:ProgramData
}

AfterAll {
    $env:ProgramData = $script:SavedProgramData
}

Describe 'sfc' {
    BeforeEach {
        Mock Get-Item -ParameterFilter { $LiteralPath -like '*CBS.log' } { [pscustomobject]@{ Length = 0 } }
    }

    It 'fails (exit 1) when sfc wrote no verification to CBS.log' {
        $fixture = Get-WuFixture -Scenario 'healthy'
        Set-WuFixtureMocks -Fixture $fixture
        Mock Test-Path -ParameterFilter { $LiteralPath -like '*CBS.log' } { $false }
        $run = Invoke-WuTestStep -Path $script:Payload
        $run.Result.facts.verdict | Should -Be 'did-not-run'
        $run.ExitCode | Should -Be 1
    }

    It 'reports corruption it could not repair as exit 6 (run dism first)' {
        $fixture = Get-WuFixture -Scenario 'component-store-corrupt'
        Set-WuFixtureMocks -Fixture $fixture
        $log = Join-Path -Path $TestDrive -ChildPath 'CBS.log'
        Set-Content -LiteralPath $log -Value @($fixture.cmdlets.native.'sfc.exe /scannow'.cbs_sr_lines) -Encoding UTF8
        Mock Join-Path -ParameterFilter { $ChildPath -eq 'Logs\CBS\CBS.log' } { $log }
        Mock Test-Path -ParameterFilter { $LiteralPath -eq $log } { $true }
        $run = Invoke-WuTestStep -Path $script:Payload
        $run.Result.facts.verdict | Should -Be 'corruption-not-repaired'
        $run.ExitCode | Should -Be 6
    }

    It 'refuses while a repair waits for a reboot' {
        Set-WuFixtureMocks -Fixture (Get-WuFixture -Scenario 'servicing-in-progress')
        $run = Invoke-WuTestStep -Path $script:Payload
        $run.ExitCode | Should -Be 4
        Should -Invoke Invoke-WuNative -Times 0 -Exactly
    }

    It 'refuses while another sfc runs once its wait is over, and not for a lingering TiWorker' {
        $fixture = Get-WuFixture -Scenario 'healthy'
        $fixture.cmdlets.processes = @('sfc', 'TiWorker')
        Set-WuFixtureMocks -Fixture $fixture
        (Invoke-WuTestStep -Path $script:Payload -Parameters @{ BusyWaitSeconds = 0 }).ExitCode | Should -Be 4
        $fixture.cmdlets.processes = @('TiWorker')
        Set-WuFixtureMocks -Fixture $fixture
        $null = Invoke-WuTestStep -Path $script:Payload -Parameters @{ BusyWaitSeconds = 0 }
        Should -Invoke Invoke-WuNative -ParameterFilter { (Split-Path -Leaf $FilePath) -eq 'sfc.exe' } -Times 1 -Exactly
    }
}
