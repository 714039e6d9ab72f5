# wuremote-script
# name: install-updates
# version: 1
# reboot: usually
# timeout: 10800
# idempotent: yes
# detached: yes
# opt-in: no
# end-wuremote-script
<#
.SYNOPSIS
    Searches, downloads and installs the selected updates through the Windows Update Agent as
    SYSTEM, one update at a time, with per-update result codes and HRESULTs. Runs detached.
.DESCRIPTION
    The update agent refuses download and install to a remote logon token, so this runs in the
    detached task as SYSTEM (as ansible.windows' win_updates runs its scheduled task).
    Selection, in win_updates' order (plugins/modules/win_updates.ps1): the search
    "IsInstalled=0 and IsHidden=0" (IUpdateSearcher::Search, learn.microsoft.com/windows/win32/
    api/wuapi/nf-wuapi-iupdatesearcher-search), then the categories (ICategory.Name), then
    optional updates (IUpdate.BrowseOnly) skipped unless -IncludeOptional, then -AcceptKb
    (only these) and -RejectKb (never these) by IUpdate.KBArticleIDs.
    Each selected update is downloaded (IUpdateDownloader) and installed (IUpdateInstaller) in
    its own call, so the progress names the update being installed ("3/7 KB5034441") and each
    result is that update's own IUpdateInstallationResult: ResultCode (OperationResultCode:
    2 succeeded, 3 succeeded with errors, 4 failed, 5 aborted; learn.microsoft.com/windows/
    win32/api/wuapi/ne-wuapi-operationresultcode), HResult and RebootRequired.
    Another install on this host (an install-kb or install-updates task of another run still
    running) is waited for, bounded by -WaitSeconds, and never stopped; servicing pending a
    reboot (WinSxS\pending.xml) is refused: the restart comes first.
    The newest successful install comes from the agent's history (IUpdateSearcher::
    GetTotalHistoryCount and QueryHistory, learn.microsoft.com/windows/win32/api/wuapi/
    nf-wuapi-iupdatesearcher-queryhistory: IUpdateHistoryEntry.Operation 1 is an installation).
.PARAMETER CategoryNames
    The agent's category names ('Security Updates'...); '*' for all.
.PARAMETER AcceptKb
    Only updates with one of these KB ids (win_updates' accept_list, PSWindowsUpdate's -KBArticleID).
.PARAMETER RejectKb
    Never updates with one of these KB ids (reject_list, -NotKBArticleID).
.PARAMETER IncludeOptional
    Also optional (BrowseOnly) updates.
.PARAMETER SearchOnly
    Search and select only (what `wuremote check` lists as pending); nothing is downloaded or installed.
.PARAMETER WaitSeconds
    How long another install on this host is waited for before this one is refused (exit 4).
.NOTES
    Exit codes: 0 every selected update installed (or nothing to install, or -SearchOnly),
    3010 installed and a restart is needed, 1 an update failed (facts.results: its HResult),
    4 refused: another install is running or servicing is pending a reboot, 5 not elevated,
    7 cannot reach the update server.
#>
[CmdletBinding()]
param(
    [string]$RunId = '',
    [string]$ResultMarker = '',
    [ValidateCount(1, 20)][string[]]$CategoryNames = @('Security Updates', 'Critical Updates'),
    [ValidatePattern('^KB\d{6,8}$')][string[]]$AcceptKb = @(),
    [ValidatePattern('^KB\d{6,8}$')][string[]]$RejectKb = @(),
    [switch]$IncludeOptional,
    [switch]$SearchOnly,
    [ValidateRange(0, 7200)][int]$WaitSeconds = 1800
)
# wuremote-prelude
$null = Start-WuTranscript -Step 'install-updates' -RunId $RunId
Assert-WuElevated -Step 'install-updates' -ResultMarker $ResultMarker

# wuremote-network-hresults: begin
$NetworkHResults = @(
    '0x8024402C', '0x80244022', '0x80072EE2', '0x80072EE7', '0x80072EFD', '0x80072EFE', '0x800705B4',
    '0x8024401B', '0x8024401C', '0x80244017', '0x80244018', '0x80244019', '0x8024402F', '0x80240438',
    '0x800B0109', '0x8024002E'
)
# wuremote-network-hresults: end

$facts = @{
    as_system        = [bool]([Security.Principal.WindowsIdentity]::GetCurrent().IsSystem)
    search_only      = [bool]$SearchOnly
    searched         = 0
    selected         = @()
    skipped          = @()
    results          = @()
    pending          = @()
    reboot_required  = $false
    last_success_utc = $null
}


function Get-UpdateKb {
    <# The update's first KB id (IUpdate.KBArticleIDs holds the digits only), or '' when it names none. #>
    [CmdletBinding()]
    param([Parameter(Mandatory = $true)][object]$Update)
    foreach ($id in @($Update.KBArticleIDs)) {
        return ('KB{0}' -f $id)
    }
    ''
}


function Complete-Install {
    [CmdletBinding()]
    param(
        [Parameter(Mandatory = $true)][string]$Status,
        [Parameter(Mandatory = $true)][int]$Code,
        [string[]]$Messages = @()
    )
    Complete-WuStep -Step 'install-updates' -Status $Status -ExitCode $Code -Facts $facts -Messages $Messages `
        -Changes @($facts['results'] | Where-Object -FilterScript { $_.result_code -eq 2 -or $_.result_code -eq 3 } | ForEach-Object -Process {
            [pscustomobject]@{ kind = 'update-installed'; kb = $_.kb } }) `
        -RebootRequired ($Code -eq 3010) -ResultMarker $ResultMarker
}

# --- never two installs at once; never an install on top of servicing that waits for a restart ---
if (-not $SearchOnly) {
    $waited = 0
    $others = @(Get-WuOtherInstall -RunId $RunId)
    while ($others.Count -gt 0 -and $waited -lt $WaitSeconds) {
        Write-Verbose ('waiting for {0} to finish ({1} s of {2} s)' -f ($others -join ', '), $waited, $WaitSeconds)
        Start-Sleep -Seconds 15
        $waited += 15
        $others = @(Get-WuOtherInstall -RunId $RunId)
    }
    if ($others.Count -gt 0) {
        $facts['busy'] = $others
        Complete-Install -Status 'failed' -Code 4 -Messages @(('{0} still running after {1} s: left alone (never stopped); install again when it ends' -f ($others -join ', '), $WaitSeconds))
    }
    if (Test-Path -LiteralPath (Join-Path -Path $env:SystemRoot -ChildPath 'WinSxS\pending.xml')) {
        Complete-Install -Status 'failed' -Code 4 -Messages @('servicing is pending a reboot (pending.xml): restart, then install')
    }
}

$session = $null
try {
    $session = New-Object -ComObject 'Microsoft.Update.Session'
    $session.ClientApplicationID = 'wuremote'
    $searcher = $session.CreateUpdateSearcher()

    # --- the newest successful installation in the agent's history ---
    try {
        $count = [int]$searcher.GetTotalHistoryCount()
        if ($count -gt 0) {
            foreach ($entry in $searcher.QueryHistory(0, [math]::Min($count, 200))) {
                if ([int]$entry.Operation -eq 1 -and ([int]$entry.ResultCode -eq 2 -or [int]$entry.ResultCode -eq 3)) {
                    $when = ([datetime]$entry.Date).ToUniversalTime()
                    if ($null -eq $facts['last_success_utc'] -or $when -gt [datetime]$facts['last_success_utc']) {
                        $facts['last_success_utc'] = $when.ToString('o')
                    }
                }
            }
        }
    }
    catch {
        $facts['history_error'] = ConvertTo-WuHexHResult -Code (Get-WuComHResult -Exception $_.Exception)
    }

    # --- search and select ---
    try {
        $search = $searcher.Search('IsInstalled=0 and IsHidden=0')
    }
    catch {
        $hex = ConvertTo-WuHexHResult -Code (Get-WuComHResult -Exception $_.Exception)
        $facts['search_hresult'] = $hex
        if ($NetworkHResults -contains $hex) {
            Complete-Install -Status 'failed' -Code 7 -Messages @(('cannot reach the update server ({0}): network, proxy or WSUS' -f $hex))
        }
        Complete-Install -Status 'failed' -Code 1 -Messages @(('search failed with {0}' -f $hex))
    }
    $facts['searched'] = [int]$search.Updates.Count
    $selected = New-Object -TypeName System.Collections.Generic.List[object]
    $described = New-Object -TypeName System.Collections.Generic.List[object]
    $skipped = New-Object -TypeName System.Collections.Generic.List[object]
    foreach ($update in $search.Updates) {
        $kb = Get-UpdateKb -Update $update
        $categories = @($update.Categories | ForEach-Object -Process { [string]$_.Name })
        $info = @{ kb = $kb; title = [string]$update.Title; categories = $categories; optional = [bool]$update.BrowseOnly
            size_bytes = [long]$update.MaxDownloadSize }
        $reason = ''
        $inCategory = $CategoryNames -contains '*' -or @($categories | Where-Object -FilterScript { $CategoryNames -contains $_ }).Count -gt 0
        if (-not $inCategory) {
            $reason = 'category'
        }
        elseif ($update.BrowseOnly -and -not $IncludeOptional) {
            $reason = 'optional'
        }
        elseif ($AcceptKb.Count -gt 0 -and $AcceptKb -notcontains $kb) {
            $reason = 'not accepted'
        }
        elseif ($RejectKb -contains $kb) {
            $reason = 'rejected'
        }
        if ($reason) {
            $info['reason'] = $reason
            $skipped.Add($info)
            continue
        }
        $selected.Add($update)
        $described.Add($info)
    }
    $facts['selected'] = $described.ToArray()
    $facts['skipped'] = $skipped.ToArray()
    $facts['pending'] = @($described | ForEach-Object -Process { $_.kb })
    if ($SearchOnly -or $selected.Count -eq 0) {
        Complete-Install -Status 'ok' -Code 0 -Messages @(('search found {0}, selected {1}' -f $facts['searched'], $selected.Count))
    }

    # --- download and install, one update at a time ---
    $results = New-Object -TypeName System.Collections.Generic.List[object]
    $total = $selected.Count
    for ($i = 0; $i -lt $total; $i++) {
        $update = $selected[$i]
        $info = $described[$i]
        $label = '{0}/{1} {2}' -f ($i + 1), $total, $info.kb
        Set-WuStepProgress -RunId $RunId -Step 'install-updates' -Percent ([int][math]::Floor(100 * $i / $total)) -Message $label
        Write-Verbose ('{0}: {1}' -f $label, $info.title)
        $one = New-Object -ComObject 'Microsoft.Update.UpdateColl'
        if (-not $update.EulaAccepted) {
            $update.AcceptEula()
        }
        $null = $one.Add($update)
        $entry = @{ kb = $info.kb; title = $info.title; phase = 'download'; result_code = 4; hresult = '0x00000000'; reboot_required = $false }
        try {
            if (-not $update.IsDownloaded) {
                $downloader = $session.CreateUpdateDownloader()
                $downloader.Updates = $one
                $download = $downloader.Download()
                $got = $download.GetUpdateResult(0)
                $entry['result_code'] = [int]$got.ResultCode
                $entry['hresult'] = ConvertTo-WuHexHResult -Code ([long]$got.HResult)
            }
            else {
                $entry['result_code'] = 2
            }
            if ($entry['result_code'] -eq 2 -or $entry['result_code'] -eq 3) {
                Set-WuStepProgress -RunId $RunId -Step 'install-updates' -Percent ([int][math]::Floor(100 * ($i + 0.5) / $total)) -Message $label
                $entry['phase'] = 'install'
                $installer = $session.CreateUpdateInstaller()
                $installer.Updates = $one
                $installation = $installer.Install()
                $done = $installation.GetUpdateResult(0)
                $entry['result_code'] = [int]$done.ResultCode
                $entry['hresult'] = ConvertTo-WuHexHResult -Code ([long]$done.HResult)
                $entry['reboot_required'] = [bool]$done.RebootRequired
            }
        }
        catch {
            $entry['result_code'] = 4
            $entry['hresult'] = ConvertTo-WuHexHResult -Code (Get-WuComHResult -Exception $_.Exception)
        }
        if ($entry['reboot_required']) {
            $facts['reboot_required'] = $true
        }
        $results.Add($entry)
    }
    Set-WuStepProgress -RunId $RunId -Step 'install-updates' -Percent 99 -Message ('{0}/{0} done' -f $total)
    $facts['results'] = $results.ToArray()
}
catch {
    $facts['agent_hresult'] = ConvertTo-WuHexHResult -Code (Get-WuComHResult -Exception $_.Exception)
    Complete-Install -Status 'failed' -Code 1 -Messages @(('the update agent failed: {0}' -f $facts['agent_hresult']))
}
finally {
    if ($null -ne $session -and [System.Runtime.InteropServices.Marshal]::IsComObject($session)) {
        $null = [System.Runtime.InteropServices.Marshal]::ReleaseComObject($session)
    }
}

$installed = @($facts['results'] | Where-Object -FilterScript { $_.result_code -eq 2 -or $_.result_code -eq 3 })
$failed = @($facts['results'] | Where-Object -FilterScript { $_.result_code -ne 2 -and $_.result_code -ne 3 })
$facts['pending'] = @($failed | ForEach-Object -Process { $_.kb })
$messages = @(('installed {0} of {1}' -f $installed.Count, $facts['results'].Count))
if ($failed.Count -gt 0) {
    $messages += @($failed | ForEach-Object -Process { '{0} {1} failed: {2}' -f $_.kb, $_.phase, $_.hresult })
    Complete-Install -Status 'failed' -Code 1 -Messages $messages
}
$status = 'ok'
$exitCode = 0
if ($facts['reboot_required']) {
    $status = 'reboot-required'
    $exitCode = 3010
    $messages += 'a restart completes the installation'
}
Complete-WuStep -Step 'install-updates' -Status $status -ExitCode $exitCode -Facts $facts -Messages $messages `
    -Changes @($installed | ForEach-Object -Process { [pscustomobject]@{ kind = 'update-installed'; kb = $_.kb } }) `
    -RebootRequired ($exitCode -eq 3010) -ResultMarker $ResultMarker
