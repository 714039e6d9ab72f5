# Pester 5: clean-boot disables only non-Microsoft, unprotected services, after recording them.
BeforeAll {
    . (Join-Path -Path $PSScriptRoot -ChildPath '_helpers.ps1')
    $script:Payload = New-WuTestPayload -Name 'clean-boot'
    $script:SavedProgramData = $env:ProgramData
}

AfterAll {
    $env:ProgramData = $script:SavedProgramData
}

Describe 'clean-boot' {
    BeforeEach {
        Mock Register-WuFailSafe { 'wuremote-failsafe-clean-boot' }
        Mock Set-WuServiceStartType { $null }
        Mock Get-Service { [pscustomobject]@{ Name = $Name; ServicesDependedOn = @() } }
        Mock Test-Path -ParameterFilter { $PathType -eq 'Leaf' } { $true }
        Mock Get-AuthenticodeSignature {
            $subject = 'CN=Microsoft Windows, O=Microsoft Corporation, C=US'
            if ($LiteralPath -like '*Fabrikam*') {
                $subject = 'CN=Fabrikam Ltd, O=Fabrikam Ltd, C=GB'
            }
            elseif ($LiteralPath -like '*Contoso*') {
                $subject = 'CN=CrowdStrike, Inc., O=CrowdStrike, Inc., C=US'
            }
            [pscustomobject]@{ Status = 'Valid'; SignerCertificate = [pscustomobject]@{ Subject = $subject } }
        }
    }

    It 'disables the third-party service and keeps Microsoft and protected ones' {
        $fixture = Get-WuFixture -Scenario 'third-party-service-conflict'
        $fixture.cmdlets.Win32_Service += [pscustomobject]@{ Name = 'ContosoEdr'; DisplayName = 'EDR'; State = 'Running'; StartMode = 'Auto'; DelayedAutoStart = $false; PathName = '"D:\Contoso\edr.exe"'; ProcessId = 0 }
        Set-WuFixtureMocks -Fixture $fixture
        $run = Invoke-WuTestStep -Path $script:Payload
        $run.ExitCode | Should -Be 3010
        Should -Invoke Set-WuServiceStartType -ParameterFilter { $Name -eq 'FabrikamSync' -and $StartType -eq 'Disabled' } -Times 1 -Exactly
        Should -Invoke Set-WuServiceStartType -ParameterFilter { $Name -ne 'FabrikamSync' } -Times 0 -Exactly
        Should -Invoke Register-WuFailSafe -ParameterFilter { $Kind -eq 'clean-boot' } -Times 1 -Exactly
    }

    It 'honours the operator exclude list' {
        Set-WuFixtureMocks -Fixture (Get-WuFixture -Scenario 'third-party-service-conflict')
        $run = Invoke-WuTestStep -Path $script:Payload -Parameters @{ ExcludeServices = @('FabrikamSync') }
        $run.ExitCode | Should -Be 0
        Should -Invoke Set-WuServiceStartType -Times 0 -Exactly
    }

    It 'lists without changing anything under -ListOnly' {
        Set-WuFixtureMocks -Fixture (Get-WuFixture -Scenario 'third-party-service-conflict')
        $run = Invoke-WuTestStep -Path $script:Payload -Parameters @{ ListOnly = $true }
        $run.ExitCode | Should -Be 0
        @($run.Result.facts.services).Count | Should -Be 1
        Should -Invoke Register-WuFailSafe -Times 0 -Exactly
    }

    It 'keeps on a cluster node the service a Generic Service resource names, and disables the rest' {
        $fixture = Get-WuFixture -Scenario 'third-party-service-conflict'
        $fixture.cmdlets.Win32_Service += [pscustomobject]@{ Name = 'ClusSvc'; DisplayName = 'Cluster Service'; State = 'Running'; StartMode = 'Auto'; DelayedAutoStart = $false; PathName = ('{0}\Cluster\clussvc.exe -s' -f $env:SystemRoot); ProcessId = 0 }
        $fixture.cmdlets.Win32_Service += [pscustomobject]@{ Name = 'FabrikamOrders'; DisplayName = 'Fabrikam orders'; State = 'Running'; StartMode = 'Manual'; DelayedAutoStart = $false; PathName = '"D:\Fabrikam\orders.exe"'; ProcessId = 0 }
        Set-WuFixtureMocks -Fixture $fixture
        Mock Get-CimInstance -ParameterFilter { $Namespace -eq 'root/MSCluster' } {
            [pscustomobject]@{ Name = 'Orders'; Type = 'Generic Service'; PrivateProperties = [pscustomobject]@{ ServiceName = 'FabrikamOrders' } }
        }
        $run = Invoke-WuTestStep -Path $script:Payload
        $run.ExitCode | Should -Be 3010
        Should -Invoke Set-WuServiceStartType -ParameterFilter { $Name -eq 'FabrikamOrders' } -Times 0 -Exactly
        Should -Invoke Set-WuServiceStartType -ParameterFilter { $Name -eq 'FabrikamSync' -and $StartType -eq 'Disabled' } -Times 1 -Exactly
        @($run.Result.facts.kept | Where-Object -FilterScript { $_.name -eq 'FabrikamOrders' -and $_.kept_because -like 'cluster-managed*' }).Count | Should -Be 1
    }

    It 'refuses on a cluster node whose resources cannot be read, changing nothing' {
        $fixture = Get-WuFixture -Scenario 'third-party-service-conflict'
        $fixture.cmdlets.Win32_Service += [pscustomobject]@{ Name = 'ClusSvc'; DisplayName = 'Cluster Service'; State = 'Running'; StartMode = 'Auto'; DelayedAutoStart = $false; PathName = ('{0}\Cluster\clussvc.exe -s' -f $env:SystemRoot); ProcessId = 0 }
        Set-WuFixtureMocks -Fixture $fixture
        Mock Get-CimInstance -ParameterFilter { $Namespace -eq 'root/MSCluster' } { throw 'Generic failure' }
        $run = Invoke-WuTestStep -Path $script:Payload
        $run.ExitCode | Should -Be 1
        ($run.Result.messages -join ' ') | Should -Match 'clean boot refused, nothing was changed'
        Should -Invoke Set-WuServiceStartType -Times 0 -Exactly
        Should -Invoke Register-WuFailSafe -Times 0 -Exactly
    }

    It 'keeps a launch-protected service whatever its signer' {
        $fixture = Get-WuFixture -Scenario 'third-party-service-conflict'
        $fixture.cmdlets.Win32_Service += [pscustomobject]@{ Name = 'NorthwindEdr'; DisplayName = 'Northwind EDR'; State = 'Running'; StartMode = 'Auto'; DelayedAutoStart = $false; PathName = '"D:\Northwind\edr.exe"'; ProcessId = 0 }
        Set-WuFixtureMocks -Fixture $fixture
        Mock Get-AuthenticodeSignature -ParameterFilter { $LiteralPath -like '*Northwind*' } {
            [pscustomobject]@{ Status = 'Valid'; SignerCertificate = [pscustomobject]@{ Subject = 'CN=Northwind Security Ltd, O=Northwind Security Ltd, C=NZ' } }
        }
        Mock Get-WuRegistryValue -ParameterFilter { $Name -eq 'LaunchProtected' -and $Path -like '*\NorthwindEdr' } { 3 }
        $run = Invoke-WuTestStep -Path $script:Payload
        $run.ExitCode | Should -Be 3010
        Should -Invoke Set-WuServiceStartType -ParameterFilter { $Name -eq 'NorthwindEdr' } -Times 0 -Exactly
        @($run.Result.facts.kept | Where-Object -FilterScript { $_.name -eq 'NorthwindEdr' }).Count | Should -Be 1
    }

    It 'keeps a service that refuses the change and does not undo the others' {
        $fixture = Get-WuFixture -Scenario 'third-party-service-conflict'
        $fixture.cmdlets.Win32_Service += [pscustomobject]@{ Name = 'FabrikamAgent'; DisplayName = 'Fabrikam agent'; State = 'Running'; StartMode = 'Auto'; DelayedAutoStart = $false; PathName = '"D:\Fabrikam\agent.exe"'; ProcessId = 0 }
        Set-WuFixtureMocks -Fixture $fixture
        Mock Set-WuServiceStartType -ParameterFilter { $Name -eq 'FabrikamAgent' } { throw 'Access is denied' }
        Mock Restore-WuStartTypes { @() }
        $run = Invoke-WuTestStep -Path $script:Payload
        $run.ExitCode | Should -Be 3010
        @($run.Result.facts.refused | ForEach-Object -Process { $_.name }) | Should -Be @('FabrikamAgent')
        Should -Invoke Set-WuServiceStartType -ParameterFilter { $Name -eq 'FabrikamSync' -and $StartType -eq 'Disabled' } -Times 1 -Exactly
        Should -Invoke Restore-WuStartTypes -Times 0 -Exactly
    }
}
