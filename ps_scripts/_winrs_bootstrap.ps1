# wuremote WinRS bootstrap: sent as -EncodedCommand; the step script and its parameters arrive on stdin.
# stdin line 1: the parameters as base64 of UTF-8 JSON; the rest: the script text.
# `powershell -Command -` would run stdin line by line and ignore $ErrorActionPreference;
# this reads all of stdin first and runs it as one script block with the parameters bound.
$ErrorActionPreference = 'Stop'
$inputText = [Console]::In.ReadToEnd()
$newline = $inputText.IndexOf("`n")
if ($newline -lt 0) {
    throw 'wuremote bootstrap: stdin holds no parameter line'
}
$json = [System.Text.Encoding]::UTF8.GetString([System.Convert]::FromBase64String($inputText.Substring(0, $newline).Trim()))
$parameters = @{}
foreach ($property in (ConvertFrom-Json -InputObject $json).PSObject.Properties) {
    $parameters[$property.Name] = $property.Value
}
$block = [System.Management.Automation.ScriptBlock]::Create($inputText.Substring($newline + 1))
& $block @parameters
exit $LASTEXITCODE
