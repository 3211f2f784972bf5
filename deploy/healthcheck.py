"""The container's health check: GET /healthz of whichever earshot server this container runs.

`earshot telegram` and Slack Socket Mode answer on EARSHOT_METRICS_PORT, `earshot slack` over HTTP and
`earshot whatsapp` on their own --port (3000 and 8080 unless ports to try are given as arguments). Exit 0
on 200; 1 on anything else, with /healthz's reason on stdout, which `docker inspect` shows.
"""
import os
import sys
import urllib.error
import urllib.request


def main() -> int:
    ports = sys.argv[1:] or [os.environ.get("EARSHOT_METRICS_PORT", "9464"), "3000", "8080"]
    for port in (p.strip() for p in ports):
        if not port or port == "0":
            continue
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=8) as resp:
                print(resp.read().decode(errors="replace").strip())
                return 0
        except urllib.error.HTTPError as err:      # 503: the reason is in the body
            print(err.read().decode(errors="replace").strip())
            return 1
        except OSError:                             # nothing listens there: try the next port
            continue
    print("no earshot health endpoint answers")
    return 1


if __name__ == "__main__":
    sys.exit(main())
