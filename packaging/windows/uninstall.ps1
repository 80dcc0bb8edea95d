<#
.SYNOPSIS
  Stops and removes the agentd service and its program folder.
.DESCRIPTION
  Run elevated: powershell -ExecutionPolicy Bypass -File uninstall.ps1 [-Purge]
  -Purge also deletes %ProgramData%\agentd (configuration, spooled reports, logs).
#>
#Requires -RunAsAdministrator
param(
    [string]$Destination = (Join-Path $env:ProgramFiles "agentd"),
    [switch]$Purge
)
$ErrorActionPreference = "Stop"
$Python = Join-Path $Destination "python\python.exe"
if ((Get-Service -Name agentd -ErrorAction SilentlyContinue) -and (Test-Path $Python)) {
    & $Python -m agentd service uninstall
    if ($LASTEXITCODE -ne 0) { throw "agentd service uninstall failed ($LASTEXITCODE)" }
}
Set-Location $env:SystemRoot
Remove-Item -Recurse -Force $Destination
if ($Purge) { Remove-Item -Recurse -Force (Join-Path $env:ProgramData "agentd") }
