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

    It 'records a pass with -RecordSuccess, so older failures demand no repair next run' {
        Set-WuFixtureMocks -Fixture (Get-WuFixture -Scenario 'healthy')
        $run = Invoke-WuTestStep -Path $script:Payload -Parameters @{ RecordSuccess = $true }
        $run.ExitCode | Should -Be 0
        $record = Get-Content -LiteralPath (Join-Path -Path $env:ProgramData -ChildPath 'wuremote\verify-ok.json') -Raw | ConvertFrom-Json
        [string]$record.utc | Should -Be ([string]$run.Result.facts.recorded_utc)
    }

    It 'records nothing when verify fails' {
        Set-WuFixtureMocks -Fixture (Get-WuFixture -Scenario 'disabled-services')
        $okPath = Join-Path -Path $env:ProgramData -ChildPath 'wuremote\verify-ok.json'
        if (Test-Path -LiteralPath $okPath) {
            Remove-Item -LiteralPath $okPath  # TestDrive lasts the whole file: the pass above wrote one
        }
        $run = Invoke-WuTestStep -Path $script:Payload -Parameters @{ RecordSuccess = $true }
        $run.ExitCode | Should -Be 1
        Test-Path -LiteralPath (Join-Path -Path $env:ProgramData -ChildPath 'wuremote\verify-ok.json') | Should -BeFalse
    }

    It 'fails a search that ends with result code 4 without throwing' {
        Set-WuFixtureMocks -Fixture (Get-WuFixture -Scenario 'healthy')
        Mock New-Object -ParameterFilter { $ComObject -eq 'Microsoft.Update.Session' } {
            $session = [pscustomobject]@{ ClientApplicationID = '' }
            $session | Add-Member -MemberType ScriptMethod -Name CreateUpdateSearcher -Value {
                $searcher = [pscustomobject]@{}
                $searcher | Add-Member -MemberType ScriptMethod -Name Search -Value { param($criteria) [pscustomobject]@{ ResultCode = 4; Updates = @() } }
                $searcher
            }
            $session
        }
        $run = Invoke-WuTestStep -Path $script:Payload
        $run.ExitCode | Should -Be 1
        $run.Result.facts.failures[0].phase | Should -Be 'search'
    }

    It 'downloads only the selected categories and skips optional updates' {
        Set-WuFixtureMocks -Fixture (Get-WuFixture -Scenario 'healthy')
        $script:Downloaded = @()
        Mock New-Object -ParameterFilter { $ComObject -eq 'Microsoft.Update.UpdateColl' } {
            $collection = [pscustomobject]@{ Items = (New-Object -TypeName System.Collections.ArrayList) }
            $collection | Add-Member -MemberType ScriptMethod -Name Add -Value { param($item) $this.Items.Add($item) }
            $collection | Add-Member -MemberType ScriptProperty -Name Count -Value { $this.Items.Count }
            $collection | Add-Member -MemberType ScriptMethod -Name Item -Value { param($i) $this.Items[$i] }
            $collection
        }
        Mock New-Object -ParameterFilter { $ComObject -eq 'Microsoft.Update.Session' } {
            $session = [pscustomobject]@{ ClientApplicationID = '' }
            $session | Add-Member -MemberType ScriptMethod -Name CreateUpdateSearcher -Value {
                $searcher = [pscustomobject]@{}
                $searcher | Add-Member -MemberType ScriptMethod -Name Search -Value {
                    param($criteria)
                    $update = {
                        param($title, $category, $browseOnly)
                        [pscustomobject]@{ Title = $title; EulaAccepted = $true; IsDownloaded = $false; BrowseOnly = $browseOnly; Categories = @([pscustomobject]@{ Name = $category }) }
                    }
                    [pscustomobject]@{ ResultCode = 2; Updates = @(
                            (& $update 'cumulative' 'Security Updates' $false),
                            (& $update 'feature update' 'Upgrades' $false),
                            (& $update 'optional preview' 'Updates' $true)) }
                }
                $searcher
            }
            $session | Add-Member -MemberType ScriptMethod -Name CreateUpdateDownloader -Value {
                $downloader = [pscustomobject]@{ Updates = $null }
                $downloader | Add-Member -MemberType ScriptMethod -Name Download -Value {
                    $script:Downloaded = @($this.Updates.Items | ForEach-Object -Process { $_.Title })
                    $result = [pscustomobject]@{}
                    $result | Add-Member -MemberType ScriptMethod -Name GetUpdateResult -Value { param($i) [pscustomobject]@{ ResultCode = 2; HResult = 0 } }
                    $result
                }
                $downloader
            }
            $session
        }
        $run = Invoke-WuTestStep -Path $script:Payload
        $run.ExitCode | Should -Be 0
        $script:Downloaded | Should -Be @('cumulative')
        @($run.Result.facts.skipped) | Should -Be @('feature update', 'optional preview')
    }
}
