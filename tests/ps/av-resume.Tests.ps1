# Pester 5: av-resume restores what av-pause recorded and only then cancels the fail-safe.
BeforeAll {
    . (Join-Path -Path $PSScriptRoot -ChildPath '_helpers.ps1')
    $script:Payload = New-WuTestPayload -Name 'av-resume'
    $script:SavedProgramData = $env:ProgramData
}

AfterAll {
    $env:ProgramData = $script:SavedProgramData
}

Describe 'av-resume' {
    BeforeEach {
        Mock Unregister-WuFailSafe { $true }
        Mock Set-MpPreference { $null }
    }

    It 'does nothing and succeeds when nothing was paused' {
        Set-WuFixtureMocks -Fixture (Get-WuFixture -Scenario 'healthy')
        $run = Invoke-WuTestStep -Path $script:Payload
        $run.ExitCode | Should -Be 0
        Should -Invoke Set-MpPreference -Times 0 -Exactly
    }

    It 'turns Defender back on, checks it, and cancels the fail-safe' {
        Set-WuFixtureMocks -Fixture (Get-WuFixture -Scenario 'healthy')
        $folder = Join-Path -Path $env:ProgramData -ChildPath 'wuremote\failsafe'
        $null = New-Item -ItemType Directory -Path $folder -Force
        Set-Content -LiteralPath (Join-Path -Path $folder -ChildPath 'av.json') -Value '{"defender_paused": true, "vendor_resume_command": "", "vendor_resume_arguments": []}' -Encoding UTF8
        Mock Get-MpComputerStatus { [pscustomobject]@{ RealTimeProtectionEnabled = $true } }
        $run = Invoke-WuTestStep -Path $script:Payload
        $run.ExitCode | Should -Be 0
        Should -Invoke Set-MpPreference -ParameterFilter { $DisableRealtimeMonitoring -eq $false } -Times 1 -Exactly
        Should -Invoke Unregister-WuFailSafe -Times 1 -Exactly
    }

    It 'keeps the fail-safe armed when protection stays off' {
        Set-WuFixtureMocks -Fixture (Get-WuFixture -Scenario 'healthy')
        $folder = Join-Path -Path $env:ProgramData -ChildPath 'wuremote\failsafe'
        $null = New-Item -ItemType Directory -Path $folder -Force
        Set-Content -LiteralPath (Join-Path -Path $folder -ChildPath 'av.json') -Value '{"defender_paused": true, "vendor_resume_command": "", "vendor_resume_arguments": []}' -Encoding UTF8
        Mock Get-MpComputerStatus { [pscustomobject]@{ RealTimeProtectionEnabled = $false } }
        $run = Invoke-WuTestStep -Path $script:Payload
        $run.ExitCode | Should -Be 1
        Should -Invoke Unregister-WuFailSafe -Times 0 -Exactly
    }
}
