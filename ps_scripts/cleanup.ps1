# wuremote-script
# name: cleanup
# version: 2
# reboot: never
# timeout: 7200
# idempotent: yes
# detached: yes
# opt-in: no
# end-wuremote-script
<#
.SYNOPSIS
    Frees space on the system drive: component-store cleanup, old temp files, old wuremote
    backups and run folders. Reports bytes freed. Runs detached (a scheduled task as SYSTEM):
    /StartComponentCleanup can take over an hour on 2012 R2/2016, and a process started from a
    WinRM shell dies with the shell's job object when the connection drops or times out.
.DESCRIPTION
    - DISM /Online /Cleanup-Image /StartComponentCleanup (superseded components). /ResetBase is
      added only with -ResetBase: it makes installed updates impossible to uninstall.
      Skipped while servicing is in progress (pending.xml) or with -SkipComponentStore.
    - Files under %SystemRoot%\Temp older than -TempAgeDays.
    - wuremote backups (*.wuremote-<stamp> beside SoftwareDistribution, its DataStore and
      Download folders, catroot2 and the BITS Downloader folder) older than -BackupAgeDays.
    - %ProgramData%\wuremote\runs\<run> folders older than -BackupAgeDays, never the current run.
.NOTES
    Exit codes: 0 done (facts.bytes_freed), 1 failed, 5 not elevated.
#>
[CmdletBinding()]
param(
    [string]$RunId = '',
    [string]$ResultMarker = '',
    [switch]$SkipComponentStore,
    [switch]$ResetBase,
    [ValidateRange(1, 3650)][int]$TempAgeDays = 7,
    [ValidateRange(0, 3650)][int]$BackupAgeDays = 7
)
# wuremote-prelude
$null = Start-WuTranscript -Step 'cleanup' -RunId $RunId
Assert-WuElevated -Step 'cleanup' -ResultMarker $ResultMarker

$changes = New-Object -TypeName System.Collections.Generic.List[object]
$messages = New-Object -TypeName System.Collections.Generic.List[string]
$facts = @{}

function Get-SystemDriveFree {
    [CmdletBinding()]
    param()
    $drive = @(Get-CimInstance -ClassName Win32_LogicalDisk | Where-Object -FilterScript { $_.DeviceID -eq $env:SystemDrive })[0]
    [long]$drive.FreeSpace
}

function Remove-WuTree {
    <#
    Deletes a file or folder without following links. Windows PowerShell's Remove-Item -Recurse
    follows a junction or directory symbolic link and deletes what it points at
    (PowerShell/PowerShell#621), and any user can plant one in %SystemRoot%\Temp or a folder
    of ours made before us. A link (FileAttributes.ReparsePoint) is removed itself:
    Directory.Delete(path, $false) on a junction removes the junction, the target "is not
    affected" (Microsoft, RemoveDirectoryW).
    #>
    [CmdletBinding()]
    param([Parameter(Mandatory = $true)][object]$Item)
    $isLink = [bool]($Item.Attributes -band [System.IO.FileAttributes]::ReparsePoint)
    if (-not $Item.PSIsContainer) {
        Remove-Item -LiteralPath $Item.FullName -Force
        return
    }
    if ($isLink) {
        [System.IO.Directory]::Delete($Item.FullName, $false)
        return
    }
    foreach ($child in @(Get-ChildItem -LiteralPath $Item.FullName -Force)) {
        Remove-WuTree -Item $child
    }
    Remove-Item -LiteralPath $Item.FullName -Force
}

function Remove-OldItem {
    <# Removes one file or folder (never through a link: Remove-WuTree); a locked item is counted and left, never fatal. #>
    [CmdletBinding()]
    param(
        [Parameter(Mandatory = $true)][object]$Item,
        [Parameter(Mandatory = $true)][string]$Kind
    )
    try {
        Remove-WuTree -Item $Item
        $changes.Add([pscustomobject]@{ kind = $Kind; path = $Item.FullName })
        return $true
    }
    catch {
        Write-Verbose ('kept {0}: {1}' -f $Item.FullName, $_.Exception.Message)
        return $false
    }
}

$freeBefore = Get-SystemDriveFree
$facts['free_bytes_before'] = $freeBefore
try {
    # --- component store ---
    $pendingXml = Test-Path -LiteralPath (Join-Path -Path $env:SystemRoot -ChildPath 'WinSxS\pending.xml')
    if ($SkipComponentStore) {
        $facts['component_store'] = 'skipped'
    }
    elseif ($pendingXml) {
        $facts['component_store'] = 'skipped: servicing pending a reboot'
        $messages.Add('component-store cleanup skipped: pending.xml present, reboot first')
    }
    else {
        $arguments = @('/Online', '/Cleanup-Image', '/StartComponentCleanup', '/Quiet', '/NoRestart')
        if ($ResetBase) {
            $arguments += '/ResetBase'
        }
        $dism = Invoke-WuNative -FilePath (Get-WuSystemTool -Name 'dism.exe') -ArgumentList $arguments
        $facts['component_store'] = ('dism exit {0}' -f $dism.ExitCode)
        $facts['dism_exit_code'] = $dism.ExitCode
        if ($dism.ExitCode -eq 0 -or $dism.ExitCode -eq 3010) {
            $changes.Add([pscustomobject]@{ kind = 'component-store-cleanup'; reset_base = [bool]$ResetBase })
        }
        else {
            $messages.Add(('component-store cleanup failed: DISM exit {0} ({1})' -f $dism.ExitCode, (ConvertTo-WuHexHResult -Code $dism.ExitCode)))
        }
    }

    # --- temp files ---
    $tempCutoff = (Get-Date).AddDays(-$TempAgeDays)
    $temp = Join-Path -Path $env:SystemRoot -ChildPath 'Temp'
    $kept = 0
    if (Test-Path -LiteralPath $temp) {
        # Files vanishing or denied while listing a busy temp folder are expected; they are simply not removed.
        $oldTemp = @(Get-ChildItem -LiteralPath $temp -Force -ErrorAction SilentlyContinue | Where-Object -FilterScript { $_.LastWriteTime -lt $tempCutoff })
        foreach ($item in $oldTemp) {
            if (-not (Remove-OldItem -Item $item -Kind 'temp-removed')) {
                $kept++
            }
        }
    }
    $facts['temp_items_kept'] = $kept

    # --- old wuremote backups ---
    # A backup's age is the UTC stamp in its name (<folder>.wuremote-yyyyMMddTHHmmssZ[-n], as
    # reset-components names it), never its CreationTime: a rename keeps the folder's creation
    # time (Microsoft, "File Times": renaming or moving within a volume preserves file times), so a
    # backup made minutes ago of a years-old folder would look years old. No stamp: not pruned.
    $backupCutoff = (Get-Date).AddDays(-$BackupAgeDays)
    $backupCutoffUtc = [DateTime]::UtcNow.AddDays(-$BackupAgeDays)
    $sd = Join-Path -Path $env:SystemRoot -ChildPath 'SoftwareDistribution'
    $parents = @($env:SystemRoot, $sd, (Join-Path -Path $env:SystemRoot -ChildPath 'System32'), (Join-Path -Path $env:ProgramData -ChildPath 'Microsoft\Network'))
    foreach ($parent in $parents) {
        if (-not (Test-Path -LiteralPath $parent)) {
            continue
        }
        $backups = @(Get-ChildItem -LiteralPath $parent -Directory -Force |
                Where-Object -FilterScript { $_.Name -match '\.wuremote-(\d{8}T\d{6}Z)(-\d+)?$' } |
                Where-Object -FilterScript {
                    $stamp = [DateTime]::ParseExact(($_.Name -replace '^.*\.wuremote-(\d{8}T\d{6}Z)(-\d+)?$', '$1'), 'yyyyMMddTHHmmssZ',
                        [System.Globalization.CultureInfo]::InvariantCulture, [System.Globalization.DateTimeStyles]'AssumeUniversal, AdjustToUniversal')
                    $stamp -lt $backupCutoffUtc
                })
        foreach ($item in $backups) {
            $null = Remove-OldItem -Item $item -Kind 'backup-removed'
        }
    }

    # --- old run folders ---
    $runs = Join-Path -Path (Get-WuStateRoot) -ChildPath 'runs'
    if (Test-Path -LiteralPath $runs) {
        $oldRuns = @(Get-ChildItem -LiteralPath $runs -Directory -Force |
                Where-Object -FilterScript { $_.Name -ne $RunId -and $_.LastWriteTime -lt $backupCutoff })
        foreach ($item in $oldRuns) {
            $null = Remove-OldItem -Item $item -Kind 'run-folder-removed'
        }
    }
}
catch {
    $messages.Add(('cleanup failed: {0}' -f $_.Exception.Message))
    $facts['free_bytes_after'] = Get-SystemDriveFree
    $facts['bytes_freed'] = [math]::Max([long]0, $facts['free_bytes_after'] - $freeBefore)
    Complete-WuStep -Step 'cleanup' -Status 'failed' -ExitCode 1 -Facts $facts -Changes $changes.ToArray() `
        -Messages $messages.ToArray() -ResultMarker $ResultMarker
}
$facts['free_bytes_after'] = Get-SystemDriveFree
$facts['bytes_freed'] = [math]::Max([long]0, $facts['free_bytes_after'] - $freeBefore)
Complete-WuStep -Step 'cleanup' -Status 'ok' -ExitCode 0 -Facts $facts -Changes $changes.ToArray() `
    -Messages $messages.ToArray() -ResultMarker $ResultMarker
