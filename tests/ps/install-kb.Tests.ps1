# Pester 5: install-kb validates the KB id, treats installed as success and installs the .msu with DISM.
BeforeAll {
    . (Join-Path -Path $PSScriptRoot -ChildPath '_helpers.ps1')
    $script:Payload = New-WuTestPayload -Name 'install-kb'
    $script:SavedProgramData = $env:ProgramData
}

AfterAll {
    $env:ProgramData = $script:SavedProgramData
}

Describe 'install-kb' {
    It 'refuses a malformed KB id before doing anything' {
        Set-WuFixtureMocks -Fixture (Get-WuFixture -Scenario 'manual-kb')
        { & $script:Payload -RunId 'pester' -KbId 'KB12' } | Should -Throw
        { & $script:Payload -RunId 'pester' -KbId 'KB5068787; Remove-Item' } | Should -Throw
        Should -Invoke Invoke-WuNative -Times 0 -Exactly
    }

    It 'succeeds without installing when the KB is already there' {
        Set-WuFixtureMocks -Fixture (Get-WuFixture -Scenario 'manual-kb')
        Mock Get-HotFix { [pscustomobject]@{ HotFixID = 'KB5068787' } }
        $run = Invoke-WuTestStep -Path $script:Payload -Parameters @{ KbId = 'KB5068787' }
        $run.ExitCode | Should -Be 0
        $run.Result.facts.already_installed | Should -BeTrue
        Should -Invoke Invoke-WuNative -Times 0 -Exactly
    }

    It 'installs the pushed .msu with DISM /Add-Package and reports 3010' {
        Set-WuFixtureMocks -Fixture (Get-WuFixture -Scenario 'manual-kb')
        Mock Get-HotFix { $null }
        $packages = Join-Path -Path $env:ProgramData -ChildPath 'wuremote\runs\pester\install-kb\packages'
        $null = New-Item -ItemType Directory -Path $packages -Force
        Set-Content -LiteralPath (Join-Path -Path $packages -ChildPath 'windows10.0-kb5068787-x64.msu') -Value 'msu'
        Mock Get-AuthenticodeSignature { [pscustomobject]@{ Status = 'Valid' } }
        $run = Invoke-WuTestStep -Path $script:Payload -Parameters @{ KbId = 'KB5068787' }
        $run.ExitCode | Should -Be 3010
        $run.Result.reboot_required | Should -BeTrue
        Should -Invoke Invoke-WuNative -ParameterFilter { (Split-Path -Leaf $FilePath) -eq 'dism.exe' -and $ArgumentList -contains '/Add-Package' } -Times 1 -Exactly
        Should -Invoke Invoke-WuNative -ParameterFilter { (Split-Path -Leaf $FilePath) -eq 'wusa.exe' } -Times 0 -Exactly
    }

    It 'on 2012 R2 expands the .msu and gives DISM the .cab its .xml names' {
        $fixture = Get-WuFixture -Scenario 'manual-kb'
        $fixture.cmdlets.Win32_OperatingSystem.BuildNumber = '9600'
        Set-WuFixtureMocks -Fixture $fixture
        Mock Get-HotFix { $null }
        Mock Get-AuthenticodeSignature { [pscustomobject]@{ Status = 'Valid' } }
        Mock Invoke-WuNative -ParameterFilter { (Split-Path -Leaf $FilePath) -eq 'expand.exe' } {
            $into = $ArgumentList[1]
            Set-Content -LiteralPath (Join-Path -Path $into -ChildPath 'Windows8.1-KB5068787-x64.xml') -Value (
                '<?xml version="1.0" encoding="utf-8" standalone="yes"?><unattend xmlns="urn:schemas-microsoft-com:unattend">' +
                '<servicing><package action="install"><assemblyIdentity name="Package_for_KB5068787" />' +
                '<source location="%configsetroot%\Windows8.1-KB5068787-x64.cab" /></package></servicing></unattend>')
            Set-Content -LiteralPath (Join-Path -Path $into -ChildPath 'Windows8.1-KB5068787-x64.cab') -Value 'cab'
            [pscustomobject]@{ ExitCode = 0; Output = @() }
        }
        $folder = Join-Path -Path $TestDrive -ChildPath 'r2'
        $null = New-Item -ItemType Directory -Path $folder -Force
        $msu = Join-Path -Path $folder -ChildPath 'windows8.1-kb5068787-x64.msu'
        Set-Content -LiteralPath $msu -Value 'msu'
        $run = Invoke-WuTestStep -Path $script:Payload -Parameters @{ KbId = 'KB5068787'; MsuPath = $msu }
        $run.ExitCode | Should -Be 3010
        $run.Result.facts.expanded_cab | Should -BeLike '*\expanded\Windows8.1-KB5068787-x64.cab'
        Should -Invoke Invoke-WuNative -ParameterFilter { (Split-Path -Leaf $FilePath) -eq 'dism.exe' -and ($ArgumentList -join ' ') -like '*/PackagePath:*expanded\Windows8.1-KB5068787-x64.cab*' } -Times 1 -Exactly
    }

    It 'says a newer servicing stack is needed first (0x800F0823, exit 6)' {
        Set-WuFixtureMocks -Fixture (Get-WuFixture -Scenario 'manual-kb')
        Mock Get-HotFix { $null }
        Mock Get-AuthenticodeSignature { [pscustomobject]@{ Status = 'Valid' } }
        Mock Invoke-WuNative -ParameterFilter { (Split-Path -Leaf $FilePath) -eq 'dism.exe' } {
            [pscustomobject]@{ ExitCode = -2146498525; Output = @('Error: 0x800f0823') }
        }
        $folder = Join-Path -Path $TestDrive -ChildPath 'ssu'
        $null = New-Item -ItemType Directory -Path $folder -Force
        Set-Content -LiteralPath (Join-Path -Path $folder -ChildPath 'windows10.0-kb5068787-x64.msu') -Value 'msu'
        $run = Invoke-WuTestStep -Path $script:Payload -Parameters @{ KbId = 'KB5068787'; MsuPath = $folder }
        $run.ExitCode | Should -Be 6
        $run.Result.facts.hresult | Should -Be '0x800F0823'
        ($run.Result.messages -join ' ') | Should -Match 'servicing stack update'
    }

    It 'refuses a package whose SHA-256 does not match' {
        Set-WuFixtureMocks -Fixture (Get-WuFixture -Scenario 'manual-kb')
        Mock Get-HotFix { $null }
        $folder = Join-Path -Path $TestDrive -ChildPath 'pkg'
        $null = New-Item -ItemType Directory -Path $folder -Force
        Set-Content -LiteralPath (Join-Path -Path $folder -ChildPath 'windows10.0-kb5068787-x64.msu') -Value 'msu'
        $run = Invoke-WuTestStep -Path $script:Payload -Parameters @{ KbId = 'KB5068787'; MsuPath = $folder; Sha256 = ('0' * 64) }
        $run.ExitCode | Should -Be 1
        Should -Invoke Invoke-WuNative -Times 0 -Exactly
    }
}
