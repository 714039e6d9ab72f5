# wuremote PSRP chain: steps that run one after another in one pipeline, so a rung and the diagnose
# after it cost one Command, one Receive and one Signal instead of two of each. Each step runs as its
# own script block with its parameters bound (values, never code). Its Complete-WuStep sees
# $global:WuremoteChain and, instead of `exit` (which ends the pipeline: a remote host's
# SetShouldExit), keeps its result and leaves the loop labelled WuremoteStep below: a labelled break
# leaves the enclosing loop of that name, looked for up the call stack (Microsoft, about_Break).
# The next step runs only when the one before ended with exit code 0 and asked for no restart, as
# cmd.exe's && runs the next command only after a success.
param(
    [Parameter(Mandatory = $true)][string[]]$Steps,
    [Parameter(Mandatory = $true)][hashtable[]]$Parameters
)
$ErrorActionPreference = 'Stop'
for ($index = 0; $index -lt $Steps.Count; $index++) {
    $bound = $Parameters[$index]
    $global:WuremoteChainResult = $null
    $global:WuremoteChain = $true
    try {
        :WuremoteStep do {
            & ([System.Management.Automation.ScriptBlock]::Create($Steps[$index])) @bound
        } while ($false)
    }
    finally {
        $global:WuremoteChain = $false
    }
    $last = $global:WuremoteChainResult
    if ($null -eq $last -or $last.exit_code -ne 0 -or $last.reboot_required) {
        break
    }
}
