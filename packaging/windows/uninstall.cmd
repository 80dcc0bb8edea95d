@echo off
rem uninstall.ps1's steps for cmd.exe: uninstall.cmd [DESTINATION] [/purge]
setlocal
set "DEST=%~1"
if "%DEST%"=="" set "DEST=%ProgramFiles%\agentd"
if exist "%DEST%\python\python.exe" "%DEST%\python\python.exe" -m agentd service uninstall
cd /d "%SystemRoot%"
rmdir /s /q "%DEST%"
if /i "%~2"=="/purge" rmdir /s /q "%ProgramData%\agentd"
exit /b 0
