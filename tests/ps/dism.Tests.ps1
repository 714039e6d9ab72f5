# Pester 5: dism reports progress, success, and 0x800F081F as "needs a repair source".
BeforeAll {
    . (Join-Path -Path $PSScriptRoot -ChildPath '_helpers.ps1')
    $script:Payload = New-WuTestPayload -Name 'dism'
    $script:SavedProgramData = $env:ProgramData
}

AfterAll {
    $env:ProgramData = $script:SavedProgramData
}

Describe 'dism' {
    It 'repairs a component store that is repairable online' {
        Set-WuFixtureMocks -Fixture (Get-WuFixture -Scenario 'component-store-corrupt')
        $run = Invoke-WuTestStep -Path $script:Payload
        $run.ExitCode | Should -Be 0
        Should -Invoke Invoke-WuNative -ParameterFilter { $ArgumentList -contains '/RestoreHealth' -and $ArgumentList -notcontains '/LimitAccess' } -Times 1 -Exactly
    }

    It 'reports 0x800F081F as needing a repair source (exit 6)' {
        Set-WuFixtureMocks -Fixture (Get-WuFixture -Scenario 'component-store-needs-source')
        $run = Invoke-WuTestStep -Path $script:Payload
        $run.ExitCode | Should -Be 6
        $run.Result.facts.needs_source | Should -BeTrue
        $run.Result.facts.hresult | Should -Be '0x800F081F'
    }

    It 'passes a reachable source with /LimitAccess' {
        Set-WuFixtureMocks -Fixture (Get-WuFixture -Scenario 'component-store-corrupt')
        Mock Test-Path -ParameterFilter { $LiteralPath -eq 'D:\sources\install.wim' } { $true }
        $null = Invoke-WuTestStep -Path $script:Payload -Parameters @{ Source = 'wim:D:\sources\install.wim:1' }
        Should -Invoke Invoke-WuNative -ParameterFilter { $ArgumentList -contains '/Source:wim:D:\sources\install.wim:1' -and $ArgumentList -contains '/LimitAccess' } -Times 1 -Exactly
    }

    It 'refuses (exit 4) beside another DISM once its wait is over, and never stops it' {
        $fixture = Get-WuFixture -Scenario 'healthy'
        $fixture.cmdlets.processes = @('DismHost')
        Set-WuFixtureMocks -Fixture $fixture
        Mock Stop-Process { $null }
        $run = Invoke-WuTestStep -Path $script:Payload -Parameters @{ BusyWaitSeconds = 0 }
        $run.ExitCode | Should -Be 4
        Should -Invoke Stop-Process -Times 0 -Exactly
        Should -Invoke Invoke-WuNative -ParameterFilter { $ArgumentList -contains '/RestoreHealth' } -Times 0 -Exactly
    }

    It 'runs while only a lingering TiWorker is there (verify''s own scan starts it)' {
        $fixture = Get-WuFixture -Scenario 'component-store-corrupt'
        $fixture.cmdlets.processes = @('TiWorker')
        Set-WuFixtureMocks -Fixture $fixture
        $null = Invoke-WuTestStep -Path $script:Payload -Parameters @{ BusyWaitSeconds = 0 }
        Should -Invoke Invoke-WuNative -ParameterFilter { $ArgumentList -contains '/RestoreHealth' } -Times 1 -Exactly
    }
}
