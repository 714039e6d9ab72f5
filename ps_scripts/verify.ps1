# wuremote-script
# name: verify
# version: 1
# reboot: never
# timeout: 3600
# idempotent: yes
# detached: yes
# opt-in: no
# end-wuremote-script
<#
.SYNOPSIS
    Proves Windows Update works: searches for applicable updates and downloads them (installs
    only with -Install), through the Windows Update Agent as SYSTEM. Runs detached.
.DESCRIPTION
    The update agent refuses download and install to a remote logon token, and a search alone
    would miss a broken download cache (0x80070002), so this runs in the detached task as
    SYSTEM. Each failure keeps its HRESULT; failures are classed as
      network   cannot reach the update server (network, proxy, TLS, WSUS): not a repair step
      agent     the update agent or its stores are broken: the repair ladder goes on
    The network list mirrors wuremote/hresult.py (category "network"); a test keeps them equal.
.PARAMETER Install
    Also install what was downloaded (reboot then decided by the agent).
.PARAMETER CategoryNames
    Only updates in one of these categories are downloaded ('*': all). The default is Ansible's
    win_updates' default category_names (Critical Updates, Security Updates, Update Rollups), so
    a verify across the fleet does not fetch feature updates, drivers or optional packages.
.PARAMETER IncludeOptional
    Also optional updates (BrowseOnly), which are skipped by default (win_updates' skip_optional).
.PARAMETER RecordSuccess
    On success, record the time in %ProgramData%\wuremote\verify-ok.json (wuremote's own state,
    like its transcripts; not a change to the host). The controller asks for it once every repair
    the findings demanded has run, so an update failure recorded before it is history, not a
    reason to repair again (diagnose reports it as last_verify_ok_utc).
.NOTES
    Exit codes: 0 search and download succeeded (or nothing applicable), 3010 installed and a
    reboot is needed (-Install), 1 agent broken (facts.failures), 5 not elevated,
    7 cannot reach the update server: network, proxy or WSUS (not a repair step).
#>
[CmdletBinding()]
param(
    [string]$RunId = '',
    [string]$ResultMarker = '',
    [switch]$Install,
    [switch]$RecordSuccess,
    [ValidateCount(1, 20)][string[]]$CategoryNames = @('Critical Updates', 'Security Updates', 'Update Rollups'),
    [switch]$IncludeOptional
)
# wuremote-prelude
$null = Start-WuTranscript -Step 'verify' -RunId $RunId
Assert-WuElevated -Step 'verify' -ResultMarker $ResultMarker

# wuremote-network-hresults: begin
$NetworkHResults = @(
    '0x8024402C', '0x80244022', '0x80072EE2', '0x80072EE7', '0x80072EFD', '0x80072EFE', '0x800705B4',
    '0x8024401B', '0x8024401C', '0x80244017', '0x80244018', '0x80244019', '0x8024402F', '0x80240438',
    '0x800B0109', '0x8024002E'
)
# wuremote-network-hresults: end

$identity = [Security.Principal.WindowsIdentity]::GetCurrent()
$facts = @{
    as_system  = [bool]$identity.IsSystem
    searched   = 0
    downloaded = 0
    installed  = 0
    failures   = @()
}
$failures = New-Object -TypeName System.Collections.Generic.List[object]

function Add-Failure {
    [CmdletBinding()]
    param(
        [Parameter(Mandatory = $true)][string]$Phase,
        [Parameter(Mandatory = $true)][long]$HResult,
        [string]$Title = ''
    )
    $hex = ConvertTo-WuHexHResult -Code $HResult
    $kind = 'agent'
    if ($NetworkHResults -contains $hex) {
        $kind = 'network'
    }
    $failures.Add(@{ phase = $Phase; hresult = $hex; kind = $kind; title = $Title })
}


if (-not $facts['as_system']) {
    $facts['warning'] = 'not running as SYSTEM: the agent refuses download to a remote logon token (0x80070005); run verify through detached-start'
}

$session = $null
try {
    $session = New-Object -ComObject 'Microsoft.Update.Session'
    $session.ClientApplicationID = 'wuremote'
    $searcher = $session.CreateUpdateSearcher()
    $search = $null
    try {
        $search = $searcher.Search("IsInstalled=0 and IsHidden=0 and Type='Software'")
        Set-WuStepProgress -RunId $RunId -Step 'verify' -Percent 30
    }
    catch {
        Add-Failure -Phase 'search' -HResult (Get-WuComHResult -Exception $_.Exception)
    }
    if ($null -ne $search) {
        # OperationResultCode: 2 succeeded, 3 succeeded with errors, 4 failed, 5 aborted
        # (Microsoft wuapi; win_updates fails a search that is neither 2 nor 3). A search that
        # did not succeed but did not throw is a failure, not an empty success.
        $facts['search_result_code'] = [int]$search.ResultCode
        if ([int]$search.ResultCode -ne 2 -and [int]$search.ResultCode -ne 3) {
            Add-Failure -Phase 'search' -HResult ([long]0x8024FFFF) -Title ('search ended with result code {0}' -f [int]$search.ResultCode)
            $search = $null
        }
    }
    if ($null -ne $search) {
        $facts['searched'] = [int]$search.Updates.Count
        $facts['updates'] = @(foreach ($update in $search.Updates) { [string]$update.Title })
        $toDownload = New-Object -ComObject 'Microsoft.Update.UpdateColl'
        $facts['already_downloaded'] = 0
        $facts['skipped'] = @()
        $selected = New-Object -TypeName System.Collections.Generic.List[object]
        foreach ($update in $search.Updates) {
            $categories = @($update.Categories | ForEach-Object -Process { [string]$_.Name })
            $inCategory = $CategoryNames -contains '*' -or @($categories | Where-Object -FilterScript { $CategoryNames -contains $_ }).Count -gt 0
            if (-not $inCategory -or ($update.BrowseOnly -and -not $IncludeOptional)) {
                $facts['skipped'] += [string]$update.Title
                continue
            }
            $selected.Add($update)
        }
        $facts['selected'] = $selected.Count
        foreach ($update in $selected) {
            if (-not $update.EulaAccepted) {
                $update.AcceptEula()
            }
            # An update already in the download cache (IUpdate.IsDownloaded, Microsoft's wuapi
            # reference) is not fetched again: a repeat verify costs the fleet no download.
            if ($update.IsDownloaded) {
                $facts['already_downloaded'] = $facts['already_downloaded'] + 1
                $facts['downloaded'] = $facts['downloaded'] + 1
            }
            $null = $toDownload.Add($update)
        }
        $toFetch = New-Object -ComObject 'Microsoft.Update.UpdateColl'
        foreach ($update in $selected) {
            if (-not $update.IsDownloaded) {
                $null = $toFetch.Add($update)
            }
        }
        if ($toFetch.Count -gt 0) {
            $downloader = $session.CreateUpdateDownloader()
            $downloader.Updates = $toFetch
            try {
                $download = $downloader.Download()
                for ($i = 0; $i -lt $toFetch.Count; $i++) {
                    $one = $download.GetUpdateResult($i)
                    if ([int]$one.ResultCode -eq 2 -or [int]$one.ResultCode -eq 3) {
                        $facts['downloaded'] = $facts['downloaded'] + 1
                    }
                    else {
                        Add-Failure -Phase 'download' -HResult ([long]$one.HResult) -Title ([string]$toFetch.Item($i).Title)
                    }
                }
            }
            catch {
                Add-Failure -Phase 'download' -HResult (Get-WuComHResult -Exception $_.Exception)
            }
            Set-WuStepProgress -RunId $RunId -Step 'verify' -Percent 70
        }
        if ($Install -and $facts['downloaded'] -gt 0 -and $failures.Count -eq 0) {
            $installer = $session.CreateUpdateInstaller()
            $installer.Updates = $toDownload
            try {
                $installation = $installer.Install()
                $facts['reboot_required'] = [bool]$installation.RebootRequired
                for ($i = 0; $i -lt $toDownload.Count; $i++) {
                    $one = $installation.GetUpdateResult($i)
                    if ([int]$one.ResultCode -eq 2 -or [int]$one.ResultCode -eq 3) {
                        $facts['installed'] = $facts['installed'] + 1
                    }
                    else {
                        Add-Failure -Phase 'install' -HResult ([long]$one.HResult) -Title ([string]$toDownload.Item($i).Title)
                    }
                }
            }
            catch {
                Add-Failure -Phase 'install' -HResult (Get-WuComHResult -Exception $_.Exception)
            }
        }
    }
}
catch {
    Add-Failure -Phase 'agent' -HResult (Get-WuComHResult -Exception $_.Exception)
}
finally {
    if ($null -ne $session -and [System.Runtime.InteropServices.Marshal]::IsComObject($session)) {
        $null = [System.Runtime.InteropServices.Marshal]::ReleaseComObject($session)
    }
}

$facts['failures'] = $failures.ToArray()
$network = @($failures | Where-Object -FilterScript { $_.kind -eq 'network' })
$agent = @($failures | Where-Object -FilterScript { $_.kind -eq 'agent' })
$status = 'ok'
$exitCode = 0
$messages = @(('search found {0}, downloaded {1}, installed {2}' -f $facts['searched'], $facts['downloaded'], $facts['installed']))
if ($agent.Count -gt 0) {
    $status = 'failed'
    $exitCode = 1
    $messages += ('update agent broken: {0}' -f (($agent | ForEach-Object -Process { '{0} {1}' -f $_.phase, $_.hresult }) -join ', '))
}
elseif ($network.Count -gt 0) {
    $status = 'failed'
    $exitCode = 7
    $messages += ('cannot reach the update server ({0}): network, proxy or WSUS; not a repair step' -f (($network | ForEach-Object -Process { $_.hresult }) -join ', '))
}
elseif ($facts.ContainsKey('reboot_required') -and $facts['reboot_required']) {
    $status = 'reboot-required'
    $exitCode = 3010
}
if ($RecordSuccess -and $exitCode -eq 0) {
    $recordedUtc = Get-WuNowUtc
    Write-WuJsonFile -Path (Join-Path -Path (Get-WuStateRoot) -ChildPath 'verify-ok.json') -InputObject ([pscustomobject]@{ utc = $recordedUtc; run_id = $RunId })
    $facts['recorded_utc'] = $recordedUtc
}
Complete-WuStep -Step 'verify' -Status $status -ExitCode $exitCode -Facts $facts -Messages $messages `
    -RebootRequired ($exitCode -eq 3010) -ResultMarker $ResultMarker
