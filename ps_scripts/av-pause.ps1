# wuremote-script
# name: av-pause
# version: 2
# reboot: never
# timeout: 300
# idempotent: yes
# detached: no
# opt-in: yes
# end-wuremote-script
<#
.SYNOPSIS
    Opt-in only: pauses antivirus real-time scanning for the repair, with an on-host fail-safe
    that turns it back on by a deadline even if the controller never returns.
.DESCRIPTION
    Defender: Set-MpPreference -DisableRealtimeMonitoring $true, then the state is read back.
    Tamper protection silently ignores the change: that is reported as "could not pause"
    (exit 1), never as paused. A third-party product is paused only by an operator-supplied
    command (-VendorPauseCommand plus arguments; an executable path, never a command string),
    and its resume command is recorded for av-resume and the fail-safe.
    What was changed is recorded in %ProgramData%\wuremote\failsafe\av.json and returned.
    The fail-safe task \wuremote\wuremote-failsafe-av restores at the deadline; av-resume
    restores and removes it.
.PARAMETER FailSafeMinutes
    Minutes from now after which the host restores antivirus by itself.
.NOTES
    Exit codes: 0 paused (or already recorded as paused by this tool), 1 could not pause
    (tamper protection, vendor command failed; nothing left paused), 2 nothing to pause
    (no Defender real-time protection on and no vendor command), 5 not elevated.
#>
[CmdletBinding()]
param(
    [string]$RunId = '',
    [string]$ResultMarker = '',
    [ValidateRange(10, 1440)][int]$FailSafeMinutes = 120,
    [string]$VendorPauseCommand = '',
    [string[]]$VendorPauseArguments = @(),
    [string]$VendorResumeCommand = '',
    [string[]]$VendorResumeArguments = @()
)
# wuremote-prelude
$null = Start-WuTranscript -Step 'av-pause' -RunId $RunId
Assert-WuElevated -Step 'av-pause' -ResultMarker $ResultMarker

$statePath = Get-WuFailSafePath -Kind 'av'
$deadline = [DateTime]::UtcNow.AddMinutes($FailSafeMinutes)
$facts = @{ deadline_utc = $deadline.ToString('o'); state_file = $statePath }
$changes = New-Object -TypeName System.Collections.Generic.List[object]
$messages = New-Object -TypeName System.Collections.Generic.List[string]

foreach ($command in @($VendorPauseCommand, $VendorResumeCommand)) {
    if ($command -and -not ([System.IO.Path]::IsPathRooted($command) -and (Test-Path -LiteralPath $command -PathType Leaf))) {
        Complete-WuStep -Step 'av-pause' -Status 'failed' -ExitCode 1 -Facts $facts -ResultMarker $ResultMarker `
            -Messages @(('vendor command {0} must be the full path of an existing executable' -f $command))
    }
}
if ([bool]$VendorPauseCommand -ne [bool]$VendorResumeCommand) {
    Complete-WuStep -Step 'av-pause' -Status 'failed' -ExitCode 1 -Facts $facts -ResultMarker $ResultMarker `
        -Messages @('a vendor pause command needs its resume command (and the other way round)')
}

$existing = Read-WuJsonFile -Path $statePath
if ($null -ne $existing) {
    # Paused earlier by this tool: extend the deadline, record nothing new.
    $facts['already_paused'] = $true
    Complete-WuFailSafeExtended -Step 'av-pause' -Kind 'av' -Existing $existing -DeadlineUtc $deadline `
        -RestoreFunction 'Restore-WuAvState' -Facts $facts -UndoneText 'antivirus turned back on' `
        -ExtendedText 'already paused by wuremote; fail-safe deadline extended' -ResultMarker $ResultMarker
}

# Record first, then register the fail-safe, then change anything: a crash at any point
# leaves a host that restores itself.
$state = [ordered]@{
    run_id                  = $RunId
    paused_utc              = Get-WuNowUtc
    deadline_utc            = $deadline.ToString('o')
    defender_paused         = $false
    vendor_resume_command   = $VendorResumeCommand
    vendor_resume_arguments = @($VendorResumeArguments)
}
Write-WuJsonFile -Path $statePath -InputObject $state
try {
    $facts['failsafe_task'] = Register-WuFailSafe -Kind 'av' -DeadlineUtc $deadline -RestoreFunction 'Restore-WuAvState'
}
catch {
    # Register-WuFailSafe proved its task cannot run (and removed it): refuse before changing anything.
    Remove-Item -LiteralPath $statePath -Force
    Complete-WuStep -Step 'av-pause' -Status 'failed' -ExitCode 1 -Facts $facts -ResultMarker $ResultMarker `
        -Messages @(('refused: {0}' -f $_.Exception.Message))
}
$changes.Add([pscustomobject]@{ kind = 'failsafe-registered'; task = $facts['failsafe_task']; deadline_utc = $deadline.ToString('o') })

$couldNot = $null
try {
    $mp = $null
    # The Defender module is absent where Defender is not installed; that is checked, not an error.
    if (Get-Command -Name 'Get-MpComputerStatus' -ErrorAction SilentlyContinue) {
        try {
            $mp = Get-MpComputerStatus
        }
        catch {
            # With a third-party antivirus active, Defender's service does not run and the cmdlet
            # fails (0x800106BA): Defender has nothing to pause, and the vendor pause still runs.
            $facts['defender_error'] = $_.Exception.Message
        }
    }
    if ($null -ne $mp) {
        # IsTamperProtected is absent on older Defender platforms: read it only where it exists (StrictMode).
        $tamper = $mp.PSObject.Properties.Name -contains 'IsTamperProtected' -and [bool]$mp.IsTamperProtected
        $facts['defender_before'] = @{ realtime_enabled = [bool]$mp.RealTimeProtectionEnabled; tamper_protected = $tamper }
        if ($mp.RealTimeProtectionEnabled) {
            Set-MpPreference -DisableRealtimeMonitoring $true
            $after = Get-MpComputerStatus
            $facts['defender_after'] = @{ realtime_enabled = [bool]$after.RealTimeProtectionEnabled }
            if ($after.RealTimeProtectionEnabled) {
                $couldNot = 'could not pause Defender: real-time protection is still on (tamper protection ignores the change)'
            }
            else {
                $state.defender_paused = $true
                Write-WuJsonFile -Path $statePath -InputObject $state
                $changes.Add([pscustomobject]@{ kind = 'defender-realtime'; from = 'on'; to = 'off' })
            }
        }
    }
    if (-not $couldNot -and $VendorPauseCommand) {
        $run = Invoke-WuNative -FilePath $VendorPauseCommand -ArgumentList $VendorPauseArguments
        $facts['vendor_pause_exit_code'] = $run.ExitCode
        if ($run.ExitCode -ne 0) {
            $couldNot = ('could not pause the third-party product: {0} exited {1}' -f $VendorPauseCommand, $run.ExitCode)
        }
        else {
            $changes.Add([pscustomobject]@{ kind = 'vendor-pause'; command = $VendorPauseCommand })
        }
    }
}
catch {
    $couldNot = ('could not pause: {0}' -f $_.Exception.Message)
}

if ($couldNot) {
    # Undo whatever did pause, so a failed pause never leaves protection off.
    $restored = Restore-WuAvState -Reason 'pause failed'
    if ($null -eq (Read-WuJsonFile -Path $statePath)) {
        $null = Unregister-WuFailSafe -Kind 'av'
    }
    $facts['restored'] = $restored
    Complete-WuStep -Step 'av-pause' -Status 'failed' -ExitCode 1 -Facts $facts -Changes $changes.ToArray() `
        -Messages @($couldNot) -ResultMarker $ResultMarker
}
if (-not $state.defender_paused -and -not $VendorPauseCommand) {
    Remove-Item -LiteralPath $statePath -Force
    $null = Unregister-WuFailSafe -Kind 'av'
    Complete-WuStep -Step 'av-pause' -Status 'not-applicable' -ExitCode 2 -Facts $facts -ResultMarker $ResultMarker `
        -Messages @('nothing to pause: Defender real-time protection is off or absent and no vendor command was given')
}
$facts['state'] = $state
$messages.Add(('antivirus paused until {0} UTC at the latest; av-resume turns it back on' -f $deadline.ToString('yyyy-MM-dd HH:mm:ss', [Globalization.CultureInfo]::InvariantCulture)))
Complete-WuStep -Step 'av-pause' -Status 'ok' -ExitCode 0 -Facts $facts -Changes $changes.ToArray() -Messages $messages.ToArray() -ResultMarker $ResultMarker
