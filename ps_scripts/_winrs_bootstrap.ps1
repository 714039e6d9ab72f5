# wuremote WinRS bootstrap (-EncodedCommand; keep it short: cmd.exe caps the line at 8191). stdin, read whole:
# line 1 the parameters (base64 of UTF-8 JSON); line 2 the prelude, 'staged <sha256>' (the copy staged on this
# host, used once its hash matches) or 'stage <sha256> <base64>'; then the step, run as one script block with
# the parameters bound. Read as UTF-8 whatever the console code page (Console.InputEncoding); see winrm.py.
$ErrorActionPreference = 'Stop'
$utf8 = New-Object -TypeName System.Text.UTF8Encoding -ArgumentList $false
try {
    [Console]::OutputEncoding = $utf8
}
catch {
    $null = $_
}
$parts = (New-Object -TypeName System.IO.StreamReader -ArgumentList @([Console]::OpenStandardInput(), $utf8)).ReadToEnd().Split([char]10, 3)
if ($parts.Count -lt 3) {
    throw 'wuremote bootstrap: stdin holds no parameter and prelude lines'
}
$parameters = @{}
foreach ($property in (ConvertFrom-Json -InputObject $utf8.GetString([Convert]::FromBase64String($parts[0].Trim()))).PSObject.Properties) {
    $parameters[$property.Name] = $property.Value
}
$line = $parts[1].Trim().Split(' ')
$expected = [string]$line[1]
$staged = Join-Path -Path $env:ProgramData -ChildPath ('wuremote\prelude\{0}.ps1' -f $expected)
$prelude = $null
if ($line[0] -eq 'stage') {
    $prelude = $utf8.GetString([Convert]::FromBase64String($line[2]))
}
elseif ($expected -match '^[0-9a-f]{64}$' -and (Test-Path -LiteralPath $staged -PathType Leaf)) {
    $prelude = [IO.File]::ReadAllText($staged, $utf8)
}
$actual = ''
if ($null -ne $prelude) {
    $actual = -join ([Security.Cryptography.SHA256]::Create().ComputeHash($utf8.GetBytes($prelude)) | ForEach-Object -Process { $_.ToString('x2') })
}
if ($actual -ne $expected -or $expected -notmatch '^[0-9a-f]{64}$') {
    if ($line[0] -eq 'stage') {
        throw 'wuremote bootstrap: the prelude does not match its sha256'
    }
    exit 22357  # nothing ran; the controller sends the prelude (PRELUDE_NOT_STAGED_EXIT)
}
$block = [ScriptBlock]::Create($prelude)
if ($line[0] -eq 'stage') {
    try {
        & { . $block; $null = Protect-WuStateRoot }
        $null = New-Item -ItemType Directory -Path (Split-Path -Path $staged -Parent) -Force
        [IO.File]::WriteAllText($staged + '.tmp', $prelude, $utf8)
        Move-Item -LiteralPath ($staged + '.tmp') -Destination $staged -Force
    }
    catch {
        $null = $_  # not staged: the next step finds no copy and gets the prelude again
    }
}
Set-Variable -Name ('WuremotePrelude_' + $expected) -Scope Global -Value $block
& ([ScriptBlock]::Create($parts[2])) @parameters
exit $LASTEXITCODE
