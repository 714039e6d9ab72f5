# Pester 5: sync-time starts w32time, resyncs, and leaves a domain member's configuration alone.
BeforeAll {
    . (Join-Path -Path $PSScriptRoot -ChildPath '_helpers.ps1')
    $script:Payload = New-WuTestPayload -Name 'sync-time'
    $script:SavedProgramData = $env:ProgramData
}

AfterAll {
    $env:ProgramData = $script:SavedProgramData
}

Describe 'sync-time' {
    BeforeEach {
        Mock Start-Service { $null }
        Mock Set-WuServiceStartType { $null }
        Mock Get-Service {
            $service = [pscustomobject]@{ Name = $Name; Status = 'Running' }
            $service | Add-Member -MemberType ScriptMethod -Name WaitForStatus -Value { param($status, $timeout) }
            $service
        }
    }

    It 'starts a stopped w32time and resyncs without touching the domain configuration' {
        $fixture = Get-WuFixture -Scenario 'clock-skew'
        Set-WuFixtureMocks -Fixture $fixture
        $run = Invoke-WuTestStep -Path $script:Payload
        $run.ExitCode | Should -Be 0
        Should -Invoke Start-Service -ParameterFilter { $Name -eq 'w32time' } -Times 1 -Exactly
        Should -Invoke Invoke-WuNative -ParameterFilter { $ArgumentList -contains '/resync' } -Times 1
        Should -Invoke Invoke-WuNative -ParameterFilter { $ArgumentList -contains '/force' } -Times 0 -Exactly
        Should -Invoke Invoke-WuNative -ParameterFilter { $ArgumentList -contains '/config' } -Times 0 -Exactly
    }

    It 'configures the given peer as an argument, not as code' {
        Set-WuFixtureMocks -Fixture (Get-WuFixture -Scenario 'healthy')
        $null = Invoke-WuTestStep -Path $script:Payload -Parameters @{ Peer = 'time.example.org,0x8' }
        Should -Invoke Invoke-WuNative -ParameterFilter { $ArgumentList -contains '/manualpeerlist:time.example.org,0x8' } -Times 1 -Exactly
    }

    It 'rejects a peer that is not a host list' {
        Set-WuFixtureMocks -Fixture (Get-WuFixture -Scenario 'healthy')
        { & $script:Payload -RunId 'pester' -Peer 'x"; Remove-Item C:\ #' } | Should -Throw
    }
}
