# wuremote-script
# name: push-kb
# version: 1
# reboot: never
# timeout: 1800
# idempotent: yes
# detached: no
# opt-in: no
# end-wuremote-script
<#
.SYNOPSIS
    Receives a .msu the controller pushes, chunk by chunk, into install-kb's staging folder.
.DESCRIPTION
    The chunks are base64 of the file's bytes, in order from -Offset: pipeline input over PSRP
    (one PIPELINE_INPUT message each), -InputObject over WinRS (they travel on the command's
    stdin). Each chunk is appended to install-kb\push\<FileName>.partial under the run's folder
    and the file closed again, so what a dropped connection leaves is whole chunks the next push
    continues after. Once the partial file holds -Size bytes its SHA-256 is checked against
    -Sha256: a match is moved to install-kb\packages\<FileName>, the folder install-kb installs
    from when given no -MsuPath or -Url; a mismatch is deleted and the step fails.
    A file already staged with the right hash is success with nothing written.
    With -Offset -1 (the default) nothing is written: the result says what the host holds.
.PARAMETER Offset
    Where the chunks start. The host must hold at least that many bytes of the partial file;
    anything after it is cut off first.
.NOTES
    Exit codes: 0 staged or chunks written (facts: staged, have, written), 1 failed (hash
    mismatch, a size overrun, an offset past what the host holds), 5 not elevated.
#>
[CmdletBinding()]
param(
    [string]$RunId = '',
    [string]$ResultMarker = '',
    [Parameter(Mandatory = $true)][ValidatePattern('^[\w.\-]+\.msu$')][string]$FileName,
    [Parameter(Mandatory = $true)][ValidatePattern('^[0-9a-fA-F]{64}$')][string]$Sha256,
    [Parameter(Mandatory = $true)][ValidateRange(0, 9223372036854775807)][long]$Size,
    [ValidateRange(-1, 9223372036854775807)][long]$Offset = -1,
    [Parameter(ValueFromPipeline = $true)][string[]]$InputObject = @()
)
begin {
# wuremote-prelude
    $null = Start-WuTranscript -Step 'push-kb' -RunId $RunId
    Assert-WuElevated -Step 'push-kb' -ResultMarker $ResultMarker

    $runPart = 'adhoc'
    if ($RunId) {
        $runPart = $RunId
    }
    $stepFolder = Get-WuRunFolder -RunId $runPart -Step 'install-kb'
    $pushFolder = Join-Path -Path $stepFolder -ChildPath 'push'
    $packages = Join-Path -Path $stepFolder -ChildPath 'packages'
    $partial = Join-Path -Path $pushFolder -ChildPath ('{0}.partial' -f $FileName)
    $final = Join-Path -Path $packages -ChildPath $FileName
    $expected = $Sha256.ToLowerInvariant()
    $facts = @{ file = $FileName; size = $Size; staged = $false; have = [long]0; written = [long]0 }

    function Get-PartialLength {
        [CmdletBinding()]
        param()
        if (Test-Path -LiteralPath $partial -PathType Leaf) {
            return [long](Get-Item -LiteralPath $partial).Length
        }
        [long]0
    }

    # --- already staged with the right hash: nothing to send ---
    if (Test-Path -LiteralPath $final -PathType Leaf) {
        $hash = (Get-FileHash -LiteralPath $final -Algorithm SHA256).Hash.ToLowerInvariant()
        if ($hash -eq $expected) {
            $facts['staged'] = $true
            $facts['have'] = $Size
            Complete-WuStep -Step 'push-kb' -Status 'ok' -ExitCode 0 -Facts $facts -ResultMarker $ResultMarker `
                -Messages @(('{0} is staged with the expected SHA-256' -f $FileName))
        }
        Write-Verbose ('{0} is staged with SHA-256 {1}, not {2}: receiving it again' -f $FileName, $hash, $expected)
        Remove-Item -LiteralPath $final -Force
    }
    $null = New-Item -ItemType Directory -Path $pushFolder -Force
    $have = Get-PartialLength
    $facts['have'] = $have
    if ($Offset -gt $have) {
        Complete-WuStep -Step 'push-kb' -Status 'failed' -ExitCode 1 -Facts $facts -ResultMarker $ResultMarker `
            -Messages @(('the host holds {0} bytes of {1}, not {2}: send from {0}' -f $have, $FileName, $Offset))
    }
    if ($Offset -ge 0 -and $Offset -lt $have) {
        $stream = [System.IO.File]::Open($partial, [System.IO.FileMode]::Open, [System.IO.FileAccess]::Write, [System.IO.FileShare]::Read)
        try {
            $stream.SetLength($Offset)
        }
        finally {
            $stream.Dispose()
        }
        $have = $Offset
    }
}
process {
    if ($Offset -lt 0) {
        return
    }
    foreach ($chunk in $InputObject) {
        $bytes = [System.Convert]::FromBase64String($chunk)
        if ($have + $bytes.Length -gt $Size) {
            Remove-Item -LiteralPath $partial -Force
            $facts['have'] = [long]0
            Complete-WuStep -Step 'push-kb' -Status 'failed' -ExitCode 1 -Facts $facts -ResultMarker $ResultMarker `
                -Messages @(('{0}: more than the {1} bytes announced arrived; the partial file is deleted' -f $FileName, $Size))
        }
        # Appended and closed chunk by chunk: a push cut off leaves whole chunks on disk.
        $stream = [System.IO.File]::Open($partial, [System.IO.FileMode]::Append, [System.IO.FileAccess]::Write, [System.IO.FileShare]::Read)
        try {
            $stream.Write($bytes, 0, $bytes.Length)
            $stream.Flush($true)
        }
        finally {
            $stream.Dispose()
        }
        $have += $bytes.Length
        $facts['written'] += $bytes.Length
    }
}
end {
    $facts['have'] = $have
    if ($have -lt $Size) {
        Complete-WuStep -Step 'push-kb' -Status 'ok' -ExitCode 0 -Facts $facts -ResultMarker $ResultMarker `
            -Messages @(('{0}: {1} of {2} bytes received' -f $FileName, $have, $Size))
    }
    $hash = (Get-FileHash -LiteralPath $partial -Algorithm SHA256).Hash.ToLowerInvariant()
    if ($hash -ne $expected) {
        Remove-Item -LiteralPath $partial -Force
        $facts['have'] = [long]0
        Complete-WuStep -Step 'push-kb' -Status 'failed' -ExitCode 1 -Facts $facts -ResultMarker $ResultMarker `
            -Messages @(('{0}: SHA-256 {1} does not match the expected {2}; the partial file is deleted' -f $FileName, $hash, $expected))
    }
    $null = New-Item -ItemType Directory -Path $packages -Force
    Move-Item -LiteralPath $partial -Destination $final -Force
    $facts['staged'] = $true
    Complete-WuStep -Step 'push-kb' -Status 'ok' -ExitCode 0 -Facts $facts -ResultMarker $ResultMarker `
        -Messages @(('{0} staged: {1} bytes, SHA-256 checked' -f $FileName, $Size))
}
