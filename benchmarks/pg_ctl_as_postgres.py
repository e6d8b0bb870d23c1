"""pg_ctl for pytest-postgresql when the benchmark runs as root (PostgreSQL refuses root).

run.py copies this file into its scratch directory, with a first line naming its own
Python, and passes it as ``--postgresql-exec``; ``$BENCH_PG_CTL`` names the real pg_ctl.
It hands the directory pytest-postgresql made for the data directory and the log to
the ``postgres`` user, lets that user through the parents inside the scratch directory,
then drops privileges and runs pg_ctl.
"""

import os
import pwd
import sys

SCRATCH = os.path.dirname(os.path.realpath(__file__))
user = pwd.getpwnam("postgres")
pg_ctl = os.environ["BENCH_PG_CTL"]
args = sys.argv[1:]
for flag in ("-D", "--pgdata", "-l", "--log"):
    if flag in args[:-1]:
        parent = os.path.dirname(os.path.realpath(args[args.index(flag) + 1]))
        if parent.startswith(SCRATCH + os.sep):
            os.chown(parent, user.pw_uid, user.pw_gid)
            step = os.path.dirname(parent)
            while step.startswith(SCRATCH):
                os.chmod(step, os.stat(step).st_mode | 0o011)
                step = os.path.dirname(step)
os.setgroups([])
os.setgid(user.pw_gid)
os.setuid(user.pw_uid)
os.chdir("/")
os.execv(pg_ctl, [pg_ctl, *args])
