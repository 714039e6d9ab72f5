# wuremote-script
# name: detached-start
# version: 1
# reboot: never
# timeout: 120
# idempotent: yes
# detached: no
# opt-in: no
# end-wuremote-script
<#
.SYNOPSIS
    Starts a long step (a script whose header says "detached: yes") as a scheduled task
    running as SYSTEM, or re-attaches to the one already running for this run and step.
.DESCRIPTION
    Stages under %ProgramData%\wuremote\runs\<RunId>\<Step>\:
      step.ps1     the step's payload (prelude inlined), checked against -PayloadSha256
      params.json  the step's parameters (bound by the runner, never pasted into code)
      runner.ps1   the constant runner (Get-WuDetachedRunnerText)
      status.json  state queued -> running -> finished (pid, started, percent, exit_code,
                   finished, boot_utc); detached-poll also derives "interrupted"
    and registers \wuremote\wuremote-<RunId>-<Step> (SYSTEM, highest privileges, no
    execution time limit: the task scheduler must never stop DISM or sfc).
    A step already queued or running is re-attached to; a finished or interrupted one is
    reported as it is unless -Restart asks for a fresh start.
.PARAMETER Step
    The detached step's name; must match the payload's header.
.PARAMETER Payload
    The step's full payload text as the controller sends it (StepScript.payload()).
.PARAMETER Body
    Instead of -Payload, where the session already holds the prelude (a PSRP pool defines it once:
    _psrp_prelude.ps1 keeps its text as $global:WuremotePreludeText_<sha256>): the step's script as
    shipped, whose '# wuremote-prelude' line is replaced here by the prelude between its begin and
    end markers, as the controller inlines it. The result is checked against -PayloadSha256 like a
    -Payload, so a prelude that differs from the controller's is never staged.
.PARAMETER PreludeSha256
    With -Body: the SHA-256 naming the session's prelude.
.PARAMETER PayloadSha256
    SHA-256 (hex) of -Payload encoded as UTF-8.
.PARAMETER ParametersJson
    A JSON object of the step's own parameters; RunId is set here, ResultMarker is ignored.
.NOTES
    Exit codes: 0 started or re-attached (facts.state), 1 failed, 5 not elevated.
#>
[CmdletBinding()]
param(
    [string]$RunId = '',
    [string]$ResultMarker = '',
    [Parameter(Mandatory = $true)][ValidatePattern('^[a-z][a-z0-9-]{0,40}$')][string]$Step,
    [string]$Payload = '',
    [string]$Body = '',
    [ValidatePattern('^([0-9a-f]{64})?$')][string]$PreludeSha256 = '',
    [Parameter(Mandatory = $true)][ValidatePattern('^[0-9a-fA-F]{64}$')][string]$PayloadSha256,
    [string]$ParametersJson = '{}',
    [switch]$Restart
)
# wuremote-prelude
Assert-WuElevated -Step 'detached-start' -ResultMarker $ResultMarker
if (-not (Test-WuName -Value $RunId)) {
    Complete-WuStep -Step 'detached-start' -Status 'failed' -ExitCode 1 -ResultMarker $ResultMarker `
        -Messages @('a detached step needs a run id of letters, digits, dot, dash or underscore (1-64)')
}
$null = Protect-WuStateRoot
$null = Start-WuTranscript -Step 'detached-start' -RunId $RunId

$folder = Get-WuRunFolder -RunId $RunId -Step $Step
$taskName = Get-WuDetachedTaskName -RunId $RunId -Step $Step
$facts = @{ run_id = $RunId; step = $Step; task_name = $taskName; folder = $folder }

function Complete-WithState {
    [CmdletBinding()]
    param(
        [Parameter(Mandatory = $true)][object]$Current,
        [Parameter(Mandatory = $true)][bool]$Attached,
        [string[]]$Messages = @()
    )
    $facts['state'] = $Current.state
    $facts['reason'] = $Current.reason
    $facts['attached'] = $Attached
    $facts['status'] = $Current.status
    Complete-WuStep -Step 'detached-start' -Status 'ok' -ExitCode 0 -Facts $facts -Messages $Messages -ResultMarker $ResultMarker
}

# --- re-attach: never a second instance, never a restart of a live one ---
$current = Get-WuDetachedState -RunId $RunId -Step $Step
if ($null -ne $current) {
    if ($current.state -eq 'running' -or $current.state -eq 'queued') {
        Complete-WithState -Current $current -Attached $true -Messages @('already running: re-attached')
    }
    if (-not $Restart) {
        Complete-WithState -Current $current -Attached $true -Messages @(('already {0}; pass -Restart to run it again' -f $current.state))
    }
}

# --- the payload: sent whole, or composed from the body and the prelude this session holds ---
if ($Payload -eq '') {
    $prelude = $null
    if ($PreludeSha256 -ne '') {
        # absent in a session that never defined this prelude (WinRS, or another version): refused below
        $prelude = Get-Variable -Name ('WuremotePreludeText_' + $PreludeSha256) -Scope Global -ValueOnly -ErrorAction SilentlyContinue
    }
    if ($Body -eq '' -or $prelude -isnot [string]) {
        Complete-WuStep -Step 'detached-start' -Status 'failed' -ExitCode 1 -Facts $facts -ResultMarker $ResultMarker `
            -Messages @('no payload: give -Payload, or -Body with -PreludeSha256 naming a prelude this session holds')
    }
    $lines = $Body -split "`n"
    $at = -1
    for ($i = 0; $i -lt $lines.Count; $i++) {
        if ($lines[$i].Trim() -eq '# wuremote-prelude') {
            $at = $i
            break
        }
    }
    if ($at -lt 0) {
        Complete-WuStep -Step 'detached-start' -Status 'failed' -ExitCode 1 -Facts $facts -ResultMarker $ResultMarker `
            -Messages @("the body has no '# wuremote-prelude' line after its param() block")
    }
    # Each line as it is, the placeholder replaced by the block (a loop, not $lines[0..($at - 1)]:
    # that range counts down to -1 when the placeholder is the first line).
    $composed = for ($i = 0; $i -lt $lines.Count; $i++) {
        if ($i -eq $at) {
            '# >>> wuremote-prelude'
            $prelude
            '# <<< wuremote-prelude'
        }
        else {
            $lines[$i]
        }
    }
    $Payload = $composed -join "`n"
}

# --- check what is being staged ---
$sha = [System.Security.Cryptography.SHA256]::Create()
try {
    $digest = -join ($sha.ComputeHash([System.Text.Encoding]::UTF8.GetBytes($Payload)) | ForEach-Object -Process { $_.ToString('x2') })
}
finally {
    $sha.Dispose()
}
if ($digest -ne $PayloadSha256.ToLowerInvariant()) {
    Complete-WuStep -Step 'detached-start' -Status 'failed' -ExitCode 1 -Facts $facts -ResultMarker $ResultMarker `
        -Messages @('payload does not match its SHA-256: not staged')
}
$header = @{}
foreach ($line in ($Payload -split "`n" | Select-Object -First 12)) {
    if ($line -match '^# (name|detached): *(\S+)') {
        $header[$Matches[1]] = $Matches[2]
    }
}
if (-not $header.ContainsKey('name') -or $header['name'] -ne $Step -or $header['detached'] -ne 'yes') {
    Complete-WuStep -Step 'detached-start' -Status 'failed' -ExitCode 1 -Facts $facts -ResultMarker $ResultMarker `
        -Messages @(('the payload is not the detached step {0} (its header names {1}, detached {2})' -f $Step, $header['name'], $header['detached']))
}
try {
    $parsed = ConvertFrom-Json -InputObject $ParametersJson
}
catch {
    Complete-WuStep -Step 'detached-start' -Status 'failed' -ExitCode 1 -Facts $facts -ResultMarker $ResultMarker `
        -Messages @(('-ParametersJson is not a JSON object: {0}' -f $_.Exception.Message))
}
if ($parsed -isnot [System.Management.Automation.PSCustomObject]) {
    Complete-WuStep -Step 'detached-start' -Status 'failed' -ExitCode 1 -Facts $facts -ResultMarker $ResultMarker `
        -Messages @('-ParametersJson must be a JSON object of parameter names and values')
}
$parameters = ConvertTo-WuHashtable -InputObject $parsed
$parameters.Remove('ResultMarker')
$parameters['RunId'] = $RunId

# --- stage and start ---
try {
    $null = New-Item -ItemType Directory -Path $folder -Force
    foreach ($old in @('result.json', 'status.json')) {
        $oldPath = Join-Path -Path $folder -ChildPath $old
        if (Test-Path -LiteralPath $oldPath) {
            Remove-Item -LiteralPath $oldPath -Force
        }
    }
    Write-WuTextFile -Path (Join-Path -Path $folder -ChildPath 'step.ps1') -Text $Payload -Bom
    $runnerText = Get-WuDetachedRunnerText
    Write-WuTextFile -Path (Join-Path -Path $folder -ChildPath 'runner.ps1') -Text $runnerText -Bom
    Write-WuJsonFile -Path (Join-Path -Path $folder -ChildPath 'params.json') -InputObject $parameters
    Write-WuJsonFile -Path (Join-Path -Path $folder -ChildPath 'status.json') -InputObject ([ordered]@{
            run_id    = $RunId
            step      = $Step
            task_name = $taskName
            state     = 'queued'
            step_sha256 = Get-WuTextHash -Text $Payload
            queued    = Get-WuNowUtc
            pid       = $null
            started   = $null
            percent   = 0
            exit_code = $null
            finished  = $null
            boot_utc  = $null
            error     = ''
        })

    $powershell = Join-Path -Path $PSHOME -ChildPath 'powershell.exe'
    $runner = Join-Path -Path $folder -ChildPath 'runner.ps1'
    # -EncodedCommand, not -File: a Group Policy execution policy (AllSigned) outranks
    # -ExecutionPolicy Bypass and would leave the step queued forever (Get-WuLoaderCommand).
    $encoded = Get-WuLoaderCommand -Path $runner -Hash (Get-WuTextHash -Text $runnerText) -Folder $folder
    $action = New-ScheduledTaskAction -Execute $powershell -WorkingDirectory $folder `
        -Argument ('-NoProfile -NonInteractive -EncodedCommand {0}' -f $encoded)
    $principal = New-ScheduledTaskPrincipal -UserId 'SYSTEM' -LogonType ServiceAccount -RunLevel Highest
    # A zero time limit means none: nothing may stop a running DISM or sfc.
    $settings = New-ScheduledTaskSettingsSet -ExecutionTimeLimit (New-TimeSpan -Seconds 0) -MultipleInstances IgnoreNew `
        -AllowStartIfOnBatteries -DontStopIfGoingOnBatteries -DontStopOnIdleEnd
    $null = Register-ScheduledTask -TaskName $taskName -TaskPath $script:WuTaskPath -Action $action -Principal $principal `
        -Settings $settings -Description ('wuremote detached step {0} of run {1}' -f $Step, $RunId) -Force
    Start-ScheduledTask -TaskPath $script:WuTaskPath -TaskName $taskName
}
catch {
    Complete-WuStep -Step 'detached-start' -Status 'failed' -ExitCode 1 -Facts $facts -ResultMarker $ResultMarker `
        -Messages @(('could not start the task: {0}' -f $_.Exception.Message))
}

# A runner blocked at once (execution policy, missing file) shows within seconds.
$deadline = [DateTime]::UtcNow.AddSeconds(15)
$current = Get-WuDetachedState -RunId $RunId -Step $Step
while ($current.state -eq 'queued' -and [DateTime]::UtcNow -lt $deadline) {
    Start-Sleep -Milliseconds 500
    $current = Get-WuDetachedState -RunId $RunId -Step $Step
}
$facts['state'] = $current.state
$facts['attached'] = $false
$facts['status'] = $current.status
Complete-WuStep -Step 'detached-start' -Status 'ok' -ExitCode 0 -Facts $facts -Messages @('started') -ResultMarker $ResultMarker
