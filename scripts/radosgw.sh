#!/usr/bin/env bash
# A throw-away S3 server for the tests: Ceph's radosgw (Debian's packages radosgw, ceph-mon,
# ceph-osd; scripts/test.sh installs them) on a one-node Ceph cluster in a folder.
#
#   scripts/radosgw.sh start DIR S3_PORT MON_PORT   # prints the endpoint, http://127.0.0.1:S3_PORT
#   scripts/radosgw.sh stop DIR                     # stops the daemons and removes DIR
#
# One monitor and one OSD keeping its objects in memory (memstore), authentication off, all
# on 127.0.0.1; radosgw with the beast frontend. An S3 user is made with the access key and
# secret in $AWS_ACCESS_KEY_ID and $AWS_SECRET_ACCESS_KEY (default: "testing" and "testing");
# buckets are made by the tests. About 2 s to start, ~140 MB.
# Ceph 16 (Debian 12) has no single-process "dbstore" backend, hence the small cluster.
set -euo pipefail

usage() {
    echo "usage: $0 start DIR S3_PORT MON_PORT | stop DIR" >&2
    exit 2
}

# write_config DIR S3_PORT MON_PORT: DIR/ceph.conf
write_config() {
    local dir=$1 s3_port=$2 mon_port=$3
    cat > "$dir/ceph.conf" <<EOF
[global]
fsid = $(cat /proc/sys/kernel/random/uuid)
mon_host = v2:127.0.0.1:$mon_port
public_addr = 127.0.0.1
ms_bind_ipv6 = false
ms_bind_msgr1 = false
# no cephx: a loopback cluster that lives as long as a test session
auth_cluster_required = none
auth_service_required = none
auth_client_required = none
ms_mon_client_mode = crc secure
# quicker monitor decisions: ~2 s to start instead of ~13 s
paxos_propose_interval = 0.05
osd_objectstore = memstore
memstore_device_bytes = 2147483648
osd_pool_default_size = 1
osd_pool_default_min_size = 1
osd_pool_default_pg_num = 8
osd_pool_default_pgp_num = 8
osd_pool_default_pg_autoscale_mode = off
mon_allow_pool_size_one = true
mon_warn_on_pool_no_redundancy = false
mon_max_pg_per_osd = 1000
osd_crush_chooseleaf_type = 0
run_dir = $dir/run
admin_socket = $dir/run/\$name.asok
log_file = $dir/log/\$name.log
pid_file = $dir/run/\$name.pid
mon_data = $dir/mon
osd_data = $dir/osd
keyring = $dir/keyring
log_to_stderr = false
err_to_stderr = true

[client.rgw]
rgw_frontends = beast endpoint=127.0.0.1:$s3_port tcp_nodelay=1
rgw_dns_name = 127.0.0.1
rgw_thread_pool_size = 64
EOF
}

start() {
    local dir=$1 s3_port=$2 mon_port=$3
    for program in radosgw ceph-mon ceph-osd; do
        command -v "$program" >/dev/null || {
            echo "radosgw.sh: $program is missing (apt-get install -y --no-install-recommends radosgw ceph-mon ceph-osd)" >&2
            exit 1
        }
    done
    mkdir -p "$dir/run" "$dir/log" "$dir/mon" "$dir/osd"
    write_config "$dir" "$s3_port" "$mon_port"
    local conf=(-c "$dir/ceph.conf")
    local fsid
    fsid=$(sed -n 's/^fsid = //p' "$dir/ceph.conf")
    monmaptool --create --fsid "$fsid" --addv a "[v2:127.0.0.1:$mon_port]" "$dir/monmap" >/dev/null
    ceph-mon "${conf[@]}" --mkfs -i a --monmap "$dir/monmap" >/dev/null
    ceph-mon "${conf[@]}" -i a
    local osd_uuid
    osd_uuid=$(cat /proc/sys/kernel/random/uuid)
    local id
    id=$(ceph "${conf[@]}" --connect-timeout 20 osd new "$osd_uuid")
    ceph-osd "${conf[@]}" -i "$id" --mkfs --osd-uuid "$osd_uuid" >/dev/null 2>&1
    ceph-osd "${conf[@]}" -i "$id" 2>>"$dir/log/osd.stderr"   # notices, not errors
    radosgw "${conf[@]}" -n client.rgw
    radosgw-admin "${conf[@]}" user create --uid castore --display-name castore \
        --access-key "${AWS_ACCESS_KEY_ID:-testing}" --secret-key "${AWS_SECRET_ACCESS_KEY:-testing}" >/dev/null
    local endpoint=http://127.0.0.1:$s3_port
    local waited=0
    until curl -s -o /dev/null "$endpoint"; do
        sleep 0.05
        waited=$((waited + 1))
        if [ $waited -gt 1200 ]; then
            echo "radosgw.sh: radosgw did not answer at $endpoint in 60 s (logs: $dir/log)" >&2
            exit 1
        fi
    done
    echo "$endpoint"
}

stop() {
    local dir=$1
    local pidfile pids=()
    # nothing to keep (memstore): SIGKILL all at once (each takes ~1-2 s to go), then wait for them
    for pidfile in "$dir"/run/*.pid; do
        [ -e "$pidfile" ] && pids+=("$(cat "$pidfile")")
    done
    [ ${#pids[@]} -eq 0 ] || kill -9 "${pids[@]}" 2>/dev/null || true
    for pid in "${pids[@]}"; do
        while kill -0 "$pid" 2>/dev/null; do sleep 0.02; done
    done
    rm -rf "$dir"
}

case "${1:-}" in
    start) [ $# -eq 4 ] || usage; start "$2" "$3" "$4" ;;
    stop) [ $# -eq 2 ] || usage; stop "$2" ;;
    *) usage ;;
esac
