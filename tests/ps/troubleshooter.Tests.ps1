# Pester 5: troubleshooter runs the pack unattended where it exists, "not applicable" where retired.
BeforeAll {
    . (Join-Path -Path $PSScriptRoot -ChildPath '_helpers.ps1')
    $script:Payload = New-WuTestPayload -Name 'troubleshooter'
    $script:SavedProgramData = $env:ProgramData
}

AfterAll {
    $env:ProgramData = $script:SavedProgramData
}

Describe 'troubleshooter' {
    It 'is not applicable (exit 2) where the pack is retired' {
        $fixture = Get-WuFixture -Scenario 'healthy'
        $fixture.cmdlets.TroubleshootingPack_module = $false
        Set-WuFixtureMocks -Fixture $fixture
        $run = Invoke-WuTestStep -Path $script:Payload
        $run.ExitCode | Should -Be 2
    }

    It 'runs the pack unattended and reads root causes from ResultReport.xml' {
        Set-WuFixtureMocks -Fixture (Get-WuFixture -Scenario 'healthy')
        Mock Import-Module { $null }
        Mock Get-TroubleshootingPack { [pscustomobject]@{ Id = 'WindowsUpdateDiagnostic' } }
        Mock Invoke-TroubleshootingPack {
            $xml = '<ResultReport><Package><Problem><RootCause id="RC_WUService" name="Service registration is missing or corrupt"><Data id="Status">Fixed</Data></RootCause></Problem></Package></ResultReport>'
            Set-Content -LiteralPath (Join-Path -Path $Result -ChildPath 'ResultReport.xml') -Value $xml -Encoding UTF8
        }
        $run = Invoke-WuTestStep -Path $script:Payload
        $run.ExitCode | Should -Be 0
        Should -Invoke Invoke-TroubleshootingPack -ParameterFilter { $Unattended } -Times 1 -Exactly
        $run.Result.facts.root_causes[0].status | Should -Be 'Fixed'
    }
}
