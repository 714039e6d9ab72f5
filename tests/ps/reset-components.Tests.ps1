# Pester 5: reset-components refuses while servicing runs, fixes local disables, reports policy,
# and always starts the services again.
BeforeAll {
    . (Join-Path -Path $PSScriptRoot -ChildPath '_helpers.ps1')
    $script:Payload = New-WuTestPayload -Name 'reset-components'
    $script:SavedProgramData = $env:ProgramData
}

AfterAll {
    $env:ProgramData = $script:SavedProgramData
}

Describe 'reset-components' {
    BeforeEach {
        Mock Set-WuServiceStartType { $null }
        Mock Stop-Service { $null }
        Mock Start-Service { $null }
        Mock Rename-Item { $null }
        Mock Remove-Item { $null }
        Mock Get-Service {
            $service = [pscustomobject]@{ Name = $Name; Status = 'Stopped'; DependentServices = @() }
            $service | Add-Member -MemberType ScriptMethod -Name WaitForStatus -Value { param($status, $timeout) }
            $service | Add-Member -MemberType ScriptMethod -Name Refresh -Value { $null }
            $service
        }
    }

    It 'refuses with exit 4 while servicing is in progress and changes nothing' {
        Set-WuFixtureMocks -Fixture (Get-WuFixture -Scenario 'servicing-in-progress')
        $run = Invoke-WuTestStep -Path $script:Payload
        $run.ExitCode | Should -Be 4
        Should -Invoke Stop-Service -Times 0 -Exactly
        Should -Invoke Rename-Item -Times 0 -Exactly
    }

    It 'sets a locally disabled service back to its default and leaves a policy-disabled one' {
        Set-WuFixtureMocks -Fixture (Get-WuFixture -Scenario 'disabled-services')
        $run = Invoke-WuTestStep -Path $script:Payload
        Should -Invoke Set-WuServiceStartType -ParameterFilter { $Name -eq 'bits' -and $StartType -eq 'Manual' } -Times 1
        Should -Invoke Set-WuServiceStartType -ParameterFilter { $Name -eq 'wuauserv' } -Times 0 -Exactly
        @($run.Result.facts.policy_disabled) | Should -Contain 'wuauserv'
    }

    It 'moves DataStore and Download aside at the gentle level' {
        Set-WuFixtureMocks -Fixture (Get-WuFixture -Scenario 'corrupt-download-cache')
        Mock Test-Path -ParameterFilter { $LiteralPath -like '*SoftwareDistribution\DataStore' -or $LiteralPath -like '*SoftwareDistribution\Download' } { $true }
        Mock Get-ChildItem -ParameterFilter { $Directory } { $null }
        $run = Invoke-WuTestStep -Path $script:Payload -Parameters @{ Level = 'gentle' }
        $run.ExitCode | Should -Be 0
        Should -Invoke Rename-Item -ParameterFilter { $NewName -like 'DataStore.wuremote-*' } -Times 1 -Exactly
        Should -Invoke Rename-Item -ParameterFilter { $NewName -like 'Download.wuremote-*' } -Times 1 -Exactly
    }

    It 'starts the services again when a service will not stop' {
        Set-WuFixtureMocks -Fixture (Get-WuFixture -Scenario 'healthy')
        Mock Get-Service {
            $service = [pscustomobject]@{ Name = $Name; Status = 'Running'; DependentServices = @() }
            $service | Add-Member -MemberType ScriptMethod -Name WaitForStatus -Value { param($status, $timeout) throw (New-Object -TypeName System.ServiceProcess.TimeoutException) }
            $service | Add-Member -MemberType ScriptMethod -Name Refresh -Value { $null }
            $service
        }
        $run = Invoke-WuTestStep -Path $script:Payload -Parameters @{ StopTimeoutSeconds = 5 }
        $run.ExitCode | Should -Be 1
        Should -Invoke Rename-Item -Times 0 -Exactly
        @($run.Result.messages) -join ' ' | Should -Match 'did not stop'
    }

    It 'is not refused by a lingering TiWorker with nothing pending' {
        $fixture = Get-WuFixture -Scenario 'corrupt-download-cache'
        $fixture.cmdlets.processes = @('TiWorker')
        Set-WuFixtureMocks -Fixture $fixture
        $run = Invoke-WuTestStep -Path $script:Payload -Parameters @{ BusyWaitSeconds = 0 }
        $run.ExitCode | Should -Not -Be 4
        Should -Invoke Stop-Service -Times 1
    }

    It 'refuses (exit 4) while DISM runs once its wait is over, and changes nothing' {
        $fixture = Get-WuFixture -Scenario 'healthy'
        $fixture.cmdlets.processes = @('DismHost')
        Set-WuFixtureMocks -Fixture $fixture
        $run = Invoke-WuTestStep -Path $script:Payload -Parameters @{ BusyWaitSeconds = 0 }
        $run.ExitCode | Should -Be 4
        Should -Invoke Stop-Service -Times 0 -Exactly
    }
}
