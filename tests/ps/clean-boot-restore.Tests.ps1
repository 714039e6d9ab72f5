# Pester 5: clean-boot-restore puts back exactly the recorded start types.
BeforeAll {
    . (Join-Path -Path $PSScriptRoot -ChildPath '_helpers.ps1')
    $script:Payload = New-WuTestPayload -Name 'clean-boot-restore'
    $script:SavedProgramData = $env:ProgramData
}

AfterAll {
    $env:ProgramData = $script:SavedProgramData
}

Describe 'clean-boot-restore' {
    BeforeEach {
        Mock Set-WuServiceStartType { $null }
        Mock Start-Service { $null }
        Mock Unregister-WuFailSafe { $true }
    }

    It 'restores each recorded start type, starts what was running, cancels the fail-safe' {
        Set-WuFixtureMocks -Fixture (Get-WuFixture -Scenario 'third-party-service-conflict')
        $folder = Join-Path -Path $env:ProgramData -ChildPath 'wuremote\failsafe'
        $null = New-Item -ItemType Directory -Path $folder -Force
        $state = '{"services": [{"name": "FabrikamSync", "original_start_type": "Automatic", "original_state": "Running"}, {"name": "FabrikamHelper", "original_start_type": "Manual", "original_state": "Stopped"}]}'
        Set-Content -LiteralPath (Join-Path -Path $folder -ChildPath 'clean-boot.json') -Value $state -Encoding UTF8
        $run = Invoke-WuTestStep -Path $script:Payload
        $run.ExitCode | Should -Be 0
        Should -Invoke Set-WuServiceStartType -ParameterFilter { $Name -eq 'FabrikamSync' -and $StartType -eq 'Automatic' } -Times 1 -Exactly
        Should -Invoke Set-WuServiceStartType -ParameterFilter { $Name -eq 'FabrikamHelper' -and $StartType -eq 'Manual' } -Times 1 -Exactly
        Should -Invoke Start-Service -ParameterFilter { $Name -eq 'FabrikamSync' } -Times 1 -Exactly
        Should -Invoke Unregister-WuFailSafe -Times 1 -Exactly
    }

    It 'succeeds with nothing recorded' {
        Set-WuFixtureMocks -Fixture (Get-WuFixture -Scenario 'healthy')
        $run = Invoke-WuTestStep -Path $script:Payload
        $run.ExitCode | Should -Be 0
        Should -Invoke Set-WuServiceStartType -Times 0 -Exactly
    }
}
