# wuremote-script
# name: detached-cleanup
# version: 1
# reboot: never
# timeout: 60
# idempotent: yes
# detached: no
# opt-in: no
# end-wuremote-script
<#
.SYNOPSIS
    Removes a detached step's scheduled task and staged payload once it no longer runs.
.DESCRIPTION
    Refuses while the step is queued or running: nothing here ever stops DISM or sfc.
    status.json, result.json and the transcript stay (the cleanup step prunes old run folders)
    unless -RemoveFiles is given.
.NOTES
    Exit codes: 0 cleaned (or nothing to clean), 4 refused: the step is still running, 1 failed,
    5 not elevated.
#>
[CmdletBinding()]
param(
    [string]$RunId = '',
    [string]$ResultMarker = '',
    [Parameter(Mandatory = $true)][ValidatePattern('^[a-z][a-z0-9-]{0,40}$')][string]$Step,
    [switch]$RemoveFiles
)
# wuremote-prelude
Assert-WuElevated -Step 'detached-cleanup' -ResultMarker $ResultMarker
if (-not (Test-WuName -Value $RunId)) {
    Complete-WuStep -Step 'detached-cleanup' -Status 'failed' -ExitCode 1 -ResultMarker $ResultMarker `
        -Messages @('a detached step needs a run id of letters, digits, dot, dash or underscore (1-64)')
}
$folder = Get-WuRunFolder -RunId $RunId -Step $Step
$taskName = Get-WuDetachedTaskName -RunId $RunId -Step $Step
$facts = @{ run_id = $RunId; step = $Step; task_name = $taskName }
$changes = New-Object -TypeName System.Collections.Generic.List[object]

$current = Get-WuDetachedState -RunId $RunId -Step $Step
if ($null -ne $current -and ($current.state -eq 'running' -or $current.state -eq 'queued' -or $current.task_state -eq 'Running')) {
    $facts['state'] = $current.state
    Complete-WuStep -Step 'detached-cleanup' -Status 'failed' -ExitCode 4 -Facts $facts -ResultMarker $ResultMarker `
        -Messages @(('{0} is still {1}: it is never stopped; poll until it finishes' -f $Step, $current.state))
}

try {
    # An absent task is fine: cleanup is idempotent.
    $task = Get-ScheduledTask -TaskPath $script:WuTaskPath -TaskName $taskName -ErrorAction SilentlyContinue
    if ($null -ne $task) {
        Unregister-ScheduledTask -TaskPath $script:WuTaskPath -TaskName $taskName -Confirm:$false
        $changes.Add([pscustomobject]@{ kind = 'task-removed'; name = $taskName })
    }
    $staged = @('step.ps1', 'runner.ps1', 'params.json')
    if ($RemoveFiles) {
        $staged += @('status.json', 'result.json', 'transcript.log')
    }
    foreach ($name in $staged) {
        $path = Join-Path -Path $folder -ChildPath $name
        if (Test-Path -LiteralPath $path) {
            Remove-Item -LiteralPath $path -Force
            $changes.Add([pscustomobject]@{ kind = 'file-removed'; path = $path })
        }
    }
}
catch {
    Complete-WuStep -Step 'detached-cleanup' -Status 'failed' -ExitCode 1 -Facts $facts -Changes $changes.ToArray() -ResultMarker $ResultMarker `
        -Messages @(('cleanup failed: {0}' -f $_.Exception.Message))
}
Complete-WuStep -Step 'detached-cleanup' -Status 'ok' -ExitCode 0 -Facts $facts -Changes $changes.ToArray() -ResultMarker $ResultMarker
