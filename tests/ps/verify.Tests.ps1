# Pester 5: verify keeps "cannot reach the update server" apart from "agent broken".
BeforeAll {
    . (Join-Path -Path $PSScriptRoot -ChildPath '_helpers.ps1')
    $script:Payload = New-WuTestPayload -Name 'verify'
    $script:SavedProgramData = $env:ProgramData
}

AfterAll {
    $env:ProgramData = $script:SavedProgramData
}

Describe 'verify' {
    BeforeEach {
        Mock New-Object -ParameterFilter { $ComObject -eq 'Microsoft.Update.Session' } {
            $fixture = $script:WuFixture.cmdlets.update_agent
            $session = [pscustomobject]@{ ClientApplicationID = '' }
            $session | Add-Member -MemberType ScriptMethod -Name CreateUpdateSearcher -Value {
                $searcher = [pscustomobject]@{}
                $searcher | Add-Member -MemberType ScriptMethod -Name Search -Value {
                    param($criteria)
                    $code = $script:WuFixture.cmdlets.update_agent.search.hresult
                    if ($code) {
                        $exception = New-Object -TypeName System.Runtime.InteropServices.COMException -ArgumentList @('search failed', [int][long]$code)
                        throw $exception
                    }
                    [pscustomobject]@{ ResultCode = 2; Updates = @() }
                }
                $searcher
            }
            $session
        }
    }

    It 'passes when search succeeds and nothing is applicable' {
        Set-WuFixtureMocks -Fixture (Get-WuFixture -Scenario 'healthy')
        $run = Invoke-WuTestStep -Path $script:Payload
        $run.ExitCode | Should -Be 0
    }

    It 'reports an unreachable WSUS as exit 7, not a broken agent' {
        Set-WuFixtureMocks -Fixture (Get-WuFixture -Scenario 'wsus-unreachable')
        $run = Invoke-WuTestStep -Path $script:Payload
        $run.ExitCode | Should -Be 7
        $run.Result.facts.failures[0].kind | Should -Be 'network'
        $run.Result.facts.failures[0].hresult | Should -Be '0x8024402C'
    }

    It 'reports a disabled service as a broken agent (exit 1)' {
        Set-WuFixtureMocks -Fixture (Get-WuFixture -Scenario 'disabled-services')
        $run = Invoke-WuTestStep -Path $script:Payload
        $run.ExitCode | Should -Be 1
        $run.Result.facts.failures[0].hresult | Should -Be '0x80070422'
    }
}
