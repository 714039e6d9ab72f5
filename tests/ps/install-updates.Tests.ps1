# Pester 5: install-updates selects as win_updates does and keeps each update's own result.
BeforeAll {
    . (Join-Path -Path $PSScriptRoot -ChildPath '_helpers.ps1')
    $script:Payload = New-WuTestPayload -Name 'install-updates'
    $script:SavedProgramData = $env:ProgramData
}

AfterAll {
    $env:ProgramData = $script:SavedProgramData
}

Describe 'install-updates' {
    BeforeEach {
        Set-WuFixtureMocks -Fixture (Get-WuFixture -Scenario 'healthy')
        $script:Installed = New-Object -TypeName System.Collections.ArrayList
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
                $searcher | Add-Member -MemberType ScriptMethod -Name GetTotalHistoryCount -Value { 1 }
                $searcher | Add-Member -MemberType ScriptMethod -Name QueryHistory -Value {
                    param($start, $count)
                    @([pscustomobject]@{ Operation = 1; ResultCode = 2; Date = [datetime]'2025-10-14T03:00:00Z' })
                }
                $searcher | Add-Member -MemberType ScriptMethod -Name Search -Value {
                    param($criteria)
                    $update = {
                        param($kb, $category, $browseOnly)
                        [pscustomobject]@{ Title = ('update ({0})' -f $kb); KBArticleIDs = @($kb.Substring(2)); EulaAccepted = $true
                            IsDownloaded = $true; BrowseOnly = $browseOnly; MaxDownloadSize = 1048576
                            Categories = @([pscustomobject]@{ Name = $category }) }
                    }
                    [pscustomobject]@{ ResultCode = 2; Updates = @(
                            (& $update 'KB5068787' 'Security Updates' $false),
                            (& $update 'KB5068862' 'Critical Updates' $false),
                            (& $update 'KB5044000' 'Upgrades' $false),
                            (& $update 'KB5067931' 'Updates' $true)) }
                }
                $searcher
            }
            $session | Add-Member -MemberType ScriptMethod -Name CreateUpdateInstaller -Value {
                $installer = [pscustomobject]@{ Updates = $null }
                $installer | Add-Member -MemberType ScriptMethod -Name Install -Value {
                    $title = $this.Updates.Item(0).Title
                    $null = $script:Installed.Add($title)
                    $failed = $title -like '*KB5068862*'
                    $result = [pscustomobject]@{ Failed = $failed }
                    $result | Add-Member -MemberType ScriptMethod -Name GetUpdateResult -Value {
                        param($i)
                        if ($this.Failed) {
                            [pscustomobject]@{ ResultCode = 4; HResult = [int][long]0x80070020; RebootRequired = $false }
                        }
                        else {
                            [pscustomobject]@{ ResultCode = 2; HResult = 0; RebootRequired = $true }
                        }
                    }
                    $result
                }
                $installer
            }
            $session
        }
    }

    It 'installs the selected updates one by one and keeps each one''s result code and HRESULT' {
        $run = Invoke-WuTestStep -Path $script:Payload
        $run.ExitCode | Should -Be 1
        @($script:Installed) | Should -Be @('update (KB5068787)', 'update (KB5068862)')
        $results = @($run.Result.facts.results)
        $results[0].result_code | Should -Be 2
        $results[0].reboot_required | Should -BeTrue
        $results[1].kb | Should -Be 'KB5068862'
        $results[1].hresult | Should -Be '0x80070020'
        @($run.Result.facts.pending) | Should -Be @('KB5068862')
        @($run.Result.facts.skipped | ForEach-Object -Process { $_.reason }) | Should -Be @('category', 'optional')
    }

    It 'rejects and accepts by KB and installs nothing with -SearchOnly' {
        $run = Invoke-WuTestStep -Path $script:Payload -Parameters @{ SearchOnly = $true; RejectKb = @('KB5068862') }
        $run.ExitCode | Should -Be 0
        @($script:Installed).Count | Should -Be 0
        @($run.Result.facts.pending) | Should -Be @('KB5068787')
        $run.Result.facts.last_success_utc | Should -Match '^2025-10-14T03:00:00'
    }
}
