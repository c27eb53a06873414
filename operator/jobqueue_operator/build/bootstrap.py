"""The start-up scripts of a highly available broker's Redis members and Sentinels (POSIX sh, pure text).

Each Pod finds its place by itself, without the operator, from what the running parts say:

- a Redis member asks the Sentinels for the master (the answer most of them give). Named by them, it is a
  replica of that master. If they name the member itself (it was the master and restarted), its data may be
  behind the replicas', which already hold every write it acknowledged: it waits (up to `NAMED_MASTER_WAIT`)
  for the Sentinels to promote one and then replicates it; only if none is promoted does it serve as the master
  again. If no Sentinel knows a master, a member that reports itself master is replicated (the Sentinels were
  all lost, the Redis Pods were not), else the first member (`-0`) is the master and the others replicate it.
  A member that starts on an empty volume never becomes the master while another member holds keys (its
  replicas would drop their copy to match it): it waits for the Sentinels to promote one;
- a Sentinel asks its peers, then the members, the same way, and monitors what it found (the first member when
  nothing runs yet), with every other member it can resolve as a known replica (so that it can promote one
  even when the master is gone before it ever answered). A Sentinel's own state is not kept: its peers and the
  members tell it again within seconds.

Every address is `host:port` (on Kubernetes the Pods' stable DNS names and the fixed ports; tests on the host
use 127.0.0.1 and free ports), so the same scripts run in both places. Redis and Sentinel announce those
names (`replica-announce-ip`, `announce-hostnames`, `resolve-hostnames`): a Pod that comes back with a new IP
keeps its identity, and the Sentinels never collect stale entries for the addresses of gone Pods.

The scripts read their settings from the environment (`Env`); the Redis member's script takes redis-server's
arguments as its own and adds `--replica-announce-ip` and, for a replica, `--replicaof`; the Sentinel's writes
its configuration file and passes its arguments on to `redis-server --sentinel`.
"""

from __future__ import annotations

from typing import Final

from jobqueue_operator.build import redis
from jobqueue_worker.contract import SENTINEL_MASTER_NAME


class Env:
    """The variables the scripts read."""

    PASSWORD: Final = redis.PASSWORD_ENV
    """The password producers and workers log in with: Redis's and the Sentinels' `requirepass`."""
    OPERATOR_PASSWORD: Final = redis.OPERATOR_PASSWORD_ENV
    """The password of the operator's own user (`redis.OPERATOR_USER`), which never changes: the scripts ask
    with it, the replicas replicate with it (`masteruser`), the Sentinels monitor the members (`auth-user`)
    and talk to each other (`sentinel-user`) with it, so a rotation of `PASSWORD` breaks none of these."""
    MEMBER: Final = "JOBQUEUE_HA_MEMBER"
    """A Redis member's own `host:port`."""
    MEMBERS: Final = "JOBQUEUE_HA_MEMBERS"
    """Every Redis member's `host:port`, space-separated, the first member first."""
    SENTINEL: Final = "JOBQUEUE_HA_SENTINEL"
    """A Sentinel's own `host:port`."""
    SENTINELS: Final = "JOBQUEUE_HA_SENTINELS"
    """Every Sentinel's `host:port`, space-separated."""
    NAMED_MASTER_WAIT: Final = "JOBQUEUE_HA_NAMED_MASTER_WAIT_SECONDS"
    """How long a member the Sentinels still name master waits for them to promote a replica."""
    QUORUM: Final = "JOBQUEUE_HA_QUORUM"
    DOWN_AFTER: Final = "JOBQUEUE_HA_DOWN_AFTER_MILLISECONDS"
    FAILOVER_TIMEOUT: Final = "JOBQUEUE_HA_FAILOVER_TIMEOUT_MILLISECONDS"
    DIRECTORY: Final = "JOBQUEUE_HA_SENTINEL_DIR"
    """Where a Sentinel writes its configuration file (Sentinel rewrites it with what it learns)."""


ASK_TIMEOUT_SECONDS: Final = 3
"""The longest one question to a Sentinel or member may take (coreutils `timeout`)."""

_COMMON: Final = f"""
# ask HOST:PORT COMMAND...: one question, as the operator's user; nothing when it does not answer.
ask() {{
  address=$1; shift
  REDISCLI_AUTH="${Env.OPERATOR_PASSWORD}" timeout {ASK_TIMEOUT_SECONDS} redis-cli --no-auth-warning \\
    --user {redis.OPERATOR_USER} -h "${{address%:*}}" -p "${{address##*:}}" "$@" 2>/dev/null
}}

# master_by_sentinels [SELF]: host:port of the master most Sentinels (but SELF) name, or nothing.
master_by_sentinels() {{
  for sentinel in ${Env.SENTINELS}; do
    [ "$sentinel" = "${{1:-}}" ] && continue
    ask "$sentinel" sentinel get-master-addr-by-name {SENTINEL_MASTER_NAME} | tr '\\n' ' ' \\
      | grep -E '^[A-Za-z0-9.-]+ [0-9]+ $' | tr ' ' ':' | sed 's/:$//'
    echo
  done | grep -v '^$' | sort | uniq -c | sort -rn | head -n 1 | sed 's/^ *[0-9]* //'
}}

# master_by_members [SELF]: host:port of the first member (but SELF) that reports itself master, or nothing.
master_by_members() {{
  for member in ${Env.MEMBERS}; do
    [ "$member" = "${{1:-}}" ] && continue
    if [ "$(ask "$member" role | head -n 1)" = master ]; then echo "$member"; return; fi
  done
}}

# replica_by_members [SELF]: host:port of the first member (but SELF) that reports itself a replica, or nothing.
replica_by_members() {{
  for member in ${Env.MEMBERS}; do
    [ "$member" = "${{1:-}}" ] && continue
    if [ "$(ask "$member" role | head -n 1)" = slave ]; then echo "$member"; return; fi
  done
}}

first_member() {{ set -- ${Env.MEMBERS}; echo "$1"; }}
"""

MEMBER_SCRIPT: Final = f"""set -eu
{_COMMON}
self="${Env.MEMBER}"

# decide: the master to replicate (host:port), or nothing to start as the master. Logs go to stderr.
decide() {{
  master=$(master_by_sentinels)
  if [ "$master" = "$self" ] && [ -z "$(master_by_members "$self")$(replica_by_members "$self")" ]; then
    # Nothing to promote: no other member runs (a fresh group whose Sentinels came up first: its other members
    # start only once this one is Ready). Waiting could not help and only delays the start.
    echo "the Sentinels name this member ($self) the master and no other member runs: nothing to wait for" >&2
    return
  fi
  if [ "$master" = "$self" ]; then
    echo "the Sentinels name this member ($self) the master: waiting up to ${Env.NAMED_MASTER_WAIT} s for" \\
      "them to promote a replica, which holds every write this member acknowledged" >&2
    waited=0
    while [ "$master" = "$self" ] && [ "$waited" -lt "${Env.NAMED_MASTER_WAIT}" ]; do
      sleep 1
      waited=$((waited + 1))
      master=$(master_by_sentinels)
    done
    if [ "$master" = "$self" ]; then echo "no replica was promoted" >&2; return; fi
  fi
  if [ -n "$master" ]; then echo "the Sentinels name the master $master" >&2; echo "$master"; return; fi
  master=$(master_by_members "$self")
  if [ -n "$master" ]; then echo "no Sentinel knows a master; the member $master is one" >&2; echo "$master"; return; fi
  if [ "$self" != "$(first_member)" ]; then
    echo "no Sentinel knows a master and no member is one: the first member will be" >&2
    first_member
  fi
  return 0
}}

# data_elsewhere: another member holds keys (it answers DBSIZE with more than 0).
data_elsewhere() {{
  for member in ${Env.MEMBERS}; do
    [ "$member" = "$self" ] && continue
    keys=$(ask "$member" dbsize | head -n 1)
    if [ "${{keys:-0}}" -gt 0 ] 2>/dev/null; then return 0; fi
  done
  return 1
}}

while :; do
  master=$(decide)
  [ -n "$master" ] && break
  # Never the master on an empty volume while a replica holds data: they would drop their copy to match it.
  # Wait instead for the Sentinels to promote a replica (they know every member: see the Sentinel's script).
  [ -d appendonlydir ] && break
  data_elsewhere || break
  echo "this member starts with no data and another member holds some: not starting as the master" >&2
  sleep 5
done
set -- "$@" --replica-announce-ip "${{self%:*}}"
if [ -z "$master" ]; then
  echo "starting as the master"
  exec redis-server "$@"
fi
echo "starting as a replica of $master"
exec redis-server "$@" --replicaof "${{master%:*}}" "${{master##*:}}"
"""
"""`sh -c MEMBER_SCRIPT redis-member REDIS-SERVER-ARGUMENTS...`"""

MEMBER_LIVENESS: Final = f"""set -eu
{_COMMON}
self="${Env.MEMBER}"
mine=$(ask "$self" role | head -n 3 | tr '\\n' ' ')
[ -n "$mine" ] || exit 1  # Redis does not answer
named=$(master_by_sentinels)
[ -n "$named" ] || exit 0  # no Sentinel answers: nothing to compare with
case "$mine" in
  "master "*) [ "$named" = "$self" ] && exit 0 ;;
  "slave "*) set -- $mine; [ "$2:$3" = "$named" ] && exit 0 ;;
  *) exit 0 ;;  # loading, or busy
esac
echo "this member follows ($mine) but the Sentinels name $named"
exit 1
"""
"""A member's liveness: Redis answers, and follows the master the Sentinels name (a master: is the one they
name). A member attached elsewhere for several probes in a row is restarted, and its start-up script attaches
it to the right master: a replica that lost its master before the Sentinels ever saw it (they learn replicas
from the master's INFO every 10 s) reconnects to whatever member takes the old master's name, a replica that
the Sentinels do not know and cannot reconfigure."""

SENTINEL_SCRIPT: Final = f"""set -eu
{_COMMON}
self="${Env.SENTINEL}"
while :; do
  master=$(master_by_sentinels "$self")
  from="the other Sentinels"
  if [ -z "$master" ]; then master=$(master_by_members); from="the members"; fi
  if [ -z "$master" ]; then master=$(first_member); from="no one (the first member)"; fi
  # Sentinel refuses to monitor a name it cannot resolve (a Pod not yet, or no longer, in DNS): ask again.
  getent hosts "${{master%:*}}" >/dev/null && break
  echo "the master $master (from $from) does not resolve yet"
  sleep 2
done
echo "monitoring $master (from $from)"
config="${Env.DIRECTORY}/sentinel.conf"
name={SENTINEL_MASTER_NAME}
escaped() {{ printf '%s' "$1" | sed 's/[\\\\"]/\\\\&/g'; }}  # for the file: \\ and " escaped
password=$(escaped "${Env.PASSWORD}")
operator=$(escaped "${Env.OPERATOR_PASSWORD}")
umask 077
printf '%s\\n' \\
  "port ${{self##*:}}" \\
  "dir ${Env.DIRECTORY}" \\
  "sentinel resolve-hostnames yes" \\
  "sentinel announce-hostnames yes" \\
  "sentinel announce-ip ${{self%:*}}" \\
  "sentinel announce-port ${{self##*:}}" \\
  "requirepass \\"$password\\"" \\
  "user {redis.OPERATOR_USER} on \\">$operator\\" {" ".join(redis.OPERATOR_PERMISSIONS)}" \\
  "sentinel sentinel-user {redis.OPERATOR_USER}" \\
  "sentinel sentinel-pass \\"$operator\\"" \\
  "sentinel monitor $name ${{master%:*}} ${{master##*:}} ${Env.QUORUM}" \\
  "sentinel auth-user $name {redis.OPERATOR_USER}" \\
  "sentinel auth-pass $name \\"$operator\\"" \\
  "sentinel down-after-milliseconds $name ${Env.DOWN_AFTER}" \\
  "sentinel failover-timeout $name ${Env.FAILOVER_TIMEOUT}" \\
  "sentinel parallel-syncs $name 1" > "$config"
# Every other member that resolves is a known replica from the start: a Sentinel learns replicas from the
# master's INFO, which a master that is already gone never answers, and then it could promote none.
for member in ${Env.MEMBERS}; do
  [ "$member" = "$master" ] && continue
  getent hosts "${{member%:*}}" >/dev/null || continue
  echo "sentinel known-replica $name ${{member%:*}} ${{member##*:}}" >> "$config"
done
exec redis-server "$config" --sentinel "$@"
"""
"""`sh -c SENTINEL_SCRIPT redis-sentinel [MORE-OPTIONS...]`"""
