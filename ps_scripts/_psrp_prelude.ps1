# wuremote PSRP prelude definition: the first pipeline on a runspace pool runs this before its step.
# It keeps the prelude as a script block in the pool's runspace, named by its sha256, so each
# later step sends only its body and dot-sources that block where the prelude goes (the step's
# own scope, as if inlined). A pool has one runspace (pypsrp's RunspacePool opens min = max = 1)
# and a runspace keeps its global variables from one pipeline to the next (Microsoft,
# "PowerShell.AddScript": the runspace's session state is shared by its pipelines).
# The text arrives as a parameter (serialized data, never pasted into code) and is checked
# against the sha256 the controller names before it is kept.
param(
    [Parameter(Mandatory = $true)][string]$Text,
    [Parameter(Mandatory = $true)][ValidatePattern('^[0-9a-f]{64}$')][string]$Sha256
)
$ErrorActionPreference = 'Stop'  # this statement runs in a local scope (use_local_scope): nothing leaks
# Under Constrained Language (WDAC/AppLocker) only core types' methods may be called (Microsoft,
# about_Language_Modes), so the hash is checked in FullLanguage only; a ScriptBlock is a core type,
# and the step that loads the prelude then refuses cleanly in Start-WuTranscript, as when inlined.
if ([string]$ExecutionContext.SessionState.LanguageMode -eq 'FullLanguage') {
    $sha = [System.Security.Cryptography.SHA256]::Create()
    $actual = -join ($sha.ComputeHash([System.Text.Encoding]::UTF8.GetBytes($Text)) | ForEach-Object -Process { $_.ToString('x2') })
    if ($actual -ne $Sha256) {
        throw ('wuremote: the prelude arrived with sha256 {0}, not {1}' -f $actual, $Sha256)
    }
}
Set-Variable -Name ('WuremotePrelude_' + $Sha256) -Scope Global -Value ([System.Management.Automation.ScriptBlock]::Create($Text))
# Its text too: detached-start composes a scheduled task's payload from it and the step's body, so a
# long step's start does not carry the prelude again (checked there against the payload's sha256).
Set-Variable -Name ('WuremotePreludeText_' + $Sha256) -Scope Global -Value $Text
