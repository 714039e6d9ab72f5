# Pester 5: av-pause records, arms the fail-safe, pauses, and reads the state back.
BeforeAll {
    . (Join-Path -Path $PSScriptRoot -ChildPath '_helpers.ps1')
    $script:Payload = New-WuTestPayload -Name 'av-pause'
    $script:SavedProgramData = $env:ProgramData
}

AfterAll {
    $env:ProgramData = $script:SavedProgramData
}

Describe 'av-pause' {
    BeforeEach {
        Mock Register-WuFailSafe { 'wuremote-failsafe-av' }
        Mock Unregister-WuFailSafe { $true }
        Mock Set-MpPreference { $null }
    }

    It 'pauses Defender and arms the fail-safe before changing anything' {
        $fixture = Get-WuFixture -Scenario 'healthy'
        Set-WuFixtureMocks -Fixture $fixture
        $script:MpCalls = 0
        Mock Get-MpComputerStatus {
            $script:MpCalls++
            [pscustomobject]@{ RealTimeProtectionEnabled = ($script:MpCalls -eq 1); IsTamperProtected = $false }
        }
        $run = Invoke-WuTestStep -Path $script:Payload
        $run.ExitCode | Should -Be 0
        Should -Invoke Register-WuFailSafe -ParameterFilter { $Kind -eq 'av' } -Times 1 -Exactly
        Should -Invoke Set-MpPreference -ParameterFilter { $DisableRealtimeMonitoring -eq $true } -Times 1 -Exactly
        Test-Path -LiteralPath (Join-Path -Path $env:ProgramData -ChildPath 'wuremote\failsafe\av.json') | Should -BeTrue
    }

    It 'reports tamper protection as "could not pause" and leaves nothing paused' {
        Set-WuFixtureMocks -Fixture (Get-WuFixture -Scenario 'healthy')
        Mock Get-MpComputerStatus { [pscustomobject]@{ RealTimeProtectionEnabled = $true; IsTamperProtected = $true } }
        $run = Invoke-WuTestStep -Path $script:Payload
        $run.ExitCode | Should -Be 1
        @($run.Result.messages) -join ' ' | Should -Match 'could not pause'
        Should -Invoke Unregister-WuFailSafe -Times 1
    }

    It 'refuses a vendor command that is not an existing full path' {
        Set-WuFixtureMocks -Fixture (Get-WuFixture -Scenario 'av-interference')
        $run = Invoke-WuTestStep -Path $script:Payload -Parameters @{ VendorPauseCommand = 'avctl pause'; VendorResumeCommand = 'avctl resume' }
        $run.ExitCode | Should -Be 1
        Should -Invoke Register-WuFailSafe -Times 0 -Exactly
    }

    It 'refuses and changes nothing when the fail-safe task cannot run on the host' {
        Set-WuFixtureMocks -Fixture (Get-WuFixture -Scenario 'healthy')
        $statePath = Join-Path -Path $env:ProgramData -ChildPath 'wuremote\failsafe\av.json'
        if (Test-Path -LiteralPath $statePath) {
            Remove-Item -LiteralPath $statePath  # TestDrive lasts the whole file: an earlier test paused
        }
        Mock Register-WuFailSafe { throw 'the fail-safe task cannot run on this host: no answer (task last result 0x800710E0)' }
        Mock Get-MpComputerStatus { [pscustomobject]@{ RealTimeProtectionEnabled = $true; IsTamperProtected = $false } }
        $run = Invoke-WuTestStep -Path $script:Payload
        $run.ExitCode | Should -Be 1
        @($run.Result.messages) -join ' ' | Should -Match 'refused: the fail-safe task cannot run'
        Should -Invoke Set-MpPreference -Times 0 -Exactly
        Test-Path -LiteralPath $statePath | Should -BeFalse
    }

    It 'still runs the vendor pause when the third-party product stopped Defender''s service (0x800106BA)' {
        Set-WuFixtureMocks -Fixture (Get-WuFixture -Scenario 'av-interference')
        $statePath = Join-Path -Path $env:ProgramData -ChildPath 'wuremote\failsafe\av.json'
        if (Test-Path -LiteralPath $statePath) {
            Remove-Item -LiteralPath $statePath  # TestDrive lasts the whole file: an earlier test paused
        }
        Mock Get-MpComputerStatus { throw 'Operation failed with the following error: 0x800106ba' }
        Mock Test-Path -ParameterFilter { $LiteralPath -like '*avctl.exe' } { $true }
        Mock Invoke-WuNative -ParameterFilter { $FilePath -like '*avctl.exe' } { [pscustomobject]@{ ExitCode = 0; Output = @() } }
        $tool = 'C:\Program Files\Contoso\Endpoint\avctl.exe'
        $run = Invoke-WuTestStep -Path $script:Payload -Parameters @{
            VendorPauseCommand = $tool; VendorPauseArguments = @('pause'); VendorResumeCommand = $tool; VendorResumeArguments = @('resume')
        }
        $run.ExitCode | Should -Be 0
        Should -Invoke Invoke-WuNative -ParameterFilter { $ArgumentList -contains 'pause' } -Times 1 -Exactly
        Should -Invoke Set-MpPreference -Times 0 -Exactly
    }

    It 'reads a Defender without IsTamperProtected (older platforms) under StrictMode' {
        Set-WuFixtureMocks -Fixture (Get-WuFixture -Scenario 'healthy')
        $statePath = Join-Path -Path $env:ProgramData -ChildPath 'wuremote\failsafe\av.json'
        if (Test-Path -LiteralPath $statePath) {
            Remove-Item -LiteralPath $statePath  # TestDrive lasts the whole file: an earlier test paused
        }
        $script:MpCalls = 0
        Mock Get-MpComputerStatus {
            $script:MpCalls++
            [pscustomobject]@{ RealTimeProtectionEnabled = ($script:MpCalls -eq 1) }
        }
        (Invoke-WuTestStep -Path $script:Payload).ExitCode | Should -Be 0
    }
}
