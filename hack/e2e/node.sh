#!/usr/bin/env bash
# The node of make test-e2e, run by hack/test-e2e.sh as the first process of new network, mount
# and PID namespaces (never call it elsewhere: it mounts tmpfs over /run and /var/log and
# programs this namespace's network). Starts etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, containerd and kubelet (no kube-proxy), imports the images, installs
# kube-clusterip as the README says, and runs the e2e specs with the arguments given.
set -euo pipefail
: "${ASSETS:?}" "${NODE_ASSETS:?}" "${WORK:?}" "${REPO:?}" "${CGROUP_ROOT:?}" "${KUSTOMIZE:?}"
[ "$$" = 1 ] || { echo "node.sh: must be the first process of its own PID namespace" >&2; exit 1; }
start=$(date +%s)
t() { echo "node: $* ($(( $(date +%s) - start ))s)" >&2; }

node_ip=10.250.0.2
pod_cidr=10.244.0.0/16
node_pod_cidr=10.244.0.0/24 # the first /24 kube-controller-manager hands out
service_cidr=10.96.0.0/16
W=$WORK
export PATH="$NODE_ASSETS:$ASSETS:$PATH"
mkdir -p "$W"/{logs,pki,etcd,cni/net.d}

# Private /run (containerd, CNI netns, kubelet sockets), /var/log (kubelet's container log
# links), /var/lib/cni (host-local leases); containerd's and kubelet's state on tmpfs too (an
# overlayfs upper dir cannot live on overlayfs).
for d in /run /var/log /var/lib/cni "$W/containerd" "$W/kubelet"; do mkdir -p "$d" && mount -t tmpfs tmpfs "$d"; done

# Network: lo, and the node's address on one end of a veth pair whose other end is the default
# route (both ends in this namespace: there is no dummy link type here).
ip link set lo up
ip link add node0 type veth peer name node0p
ip addr add $node_ip/24 dev node0
ip addr add 10.250.0.1/24 dev node0p
ip link set node0 up && ip link set node0p up
ip route add default via 10.250.0.1 dev node0 src $node_ip
sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.all.route_localnet=1

# PKI: one CA for the API server's serving certificate (pods verify it with the
# kube-root-ca.crt ConfigMap) and the service account keys. Components authenticate with a
# static token of group system:masters.
pki=$W/pki
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=e2e-ca -keyout "$pki/ca.key" -out "$pki/ca.crt" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj /CN=kube-apiserver -keyout "$pki/apiserver.key" -out "$pki/apiserver.csr" 2>/dev/null
printf 'subjectAltName=IP:%s,IP:10.96.0.1,IP:127.0.0.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:localhost\n' $node_ip >"$pki/san.cnf"
openssl x509 -req -in "$pki/apiserver.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial -days 1 \
	-extfile "$pki/san.cnf" -out "$pki/apiserver.crt" 2>/dev/null
openssl genrsa -out "$pki/sa.key" 2048 2>/dev/null
openssl rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null
token=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
echo "$token,e2e-admin,e2e-admin,system:masters" >"$pki/tokens.csv"
write_kubeconfig() { # write_kubeconfig FILE: the API server by its node address, with the token
	cat >"$1" <<KC
apiVersion: v1
kind: Config
clusters: [{name: e2e, cluster: {server: "https://$node_ip:6443", certificate-authority: "$pki/ca.crt"}}]
users: [{name: e2e, user: {token: "$token"}}]
contexts: [{name: e2e, context: {cluster: e2e, user: e2e}}]
current-context: e2e
KC
}
kubeconfig=$W/kubeconfig
write_kubeconfig "$kubeconfig"
export KUBECONFIG=$kubeconfig

daemon() { # daemon NAME COMMAND...: start in the background, log to logs/NAME.log
	local name=$1; shift
	"$@" >"$W/logs/$name.log" 2>&1 &
	echo $! >"$W/$name.pid"
}
wait_for() { # wait_for WHAT SECONDS COMMAND...
	local what=$1 limit=$2; shift 2
	for _ in $(seq "$limit"); do "$@" >/dev/null 2>&1 && return 0; sleep 1; done
	echo "node: $what not up after ${limit}s; logs in $W/logs" >&2; return 1
}

daemon etcd etcd --data-dir "$W/etcd" --listen-client-urls http://127.0.0.1:2379 \
	--advertise-client-urls http://127.0.0.1:2379 --listen-peer-urls http://127.0.0.1:2380 --unsafe-no-fsync
daemon kube-apiserver kube-apiserver --etcd-servers http://127.0.0.1:2379 \
	--advertise-address $node_ip --bind-address 0.0.0.0 --secure-port 6443 \
	--tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" --client-ca-file "$pki/ca.crt" \
	--token-auth-file "$pki/tokens.csv" --authorization-mode Node,RBAC \
	--service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
	--service-account-issuer https://kubernetes.default.svc --service-cluster-ip-range $service_cidr \
	--kubelet-preferred-address-types InternalIP --allow-privileged
wait_for kube-apiserver 120 kubectl get --raw /readyz
t "kube-apiserver ready"
daemon kube-controller-manager kube-controller-manager --kubeconfig "$kubeconfig" \
	--controllers '*,-endpoint,-endpointslice,-endpointslicemirroring' \
	--allocate-node-cidrs --cluster-cidr $pod_cidr --node-cidr-mask-size 24 --service-cluster-ip-range $service_cidr \
	--root-ca-file "$pki/ca.crt" --service-account-private-key-file "$pki/sa.key" --use-service-account-credentials \
	--leader-elect=false --bind-address 127.0.0.1 --secure-port 10257
daemon kube-scheduler kube-scheduler --kubeconfig "$kubeconfig" --leader-elect=false --bind-address 127.0.0.1 --secure-port 10259

# containerd: CRI with runc from Debian, our CNI plugins, the local pause image as sandbox;
# root here lacks CAP_SYS_RESOURCE, so runc must not lower oom_score_adj.
cat >"$W/containerd.toml" <<TOML
version = 3
root = "$W/containerd/root"
state = "/run/containerd/state"
[grpc]
  address = "/run/containerd/containerd.sock"
[plugins.'io.containerd.cri.v1.images']
  snapshotter = 'overlayfs'
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = 'registry.k8s.io/pause:e2e'
[plugins.'io.containerd.cri.v1.runtime']
  restrict_oom_score_adj = true
  [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
    runtime_type = 'io.containerd.runc.v2'
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
      BinaryName = '$(command -v runc)'
      SystemdCgroup = false
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ['$NODE_ASSETS/cni']
    conf_dir = '$W/cni/net.d'
TOML
# ptp (a veth per pod, routed by the node) rather than a bridge: replies between pods of one
# node then cross the node's hooks, where the datapath undoes its DNAT, without br_netfilter.
cat >"$W/cni/net.d/10-e2e.conflist" <<CNI
{"cniVersion": "1.0.0", "name": "e2e", "plugins": [
  {"type": "ptp", "ipMasq": false, "ipam": {"type": "host-local", "ranges": [[{"subnet": "$node_pod_cidr"}]],
   "routes": [{"dst": "0.0.0.0/0"}], "dataDir": "/var/lib/cni/networks"}},
  {"type": "loopback"}]}
CNI
daemon containerd containerd --config "$W/containerd.toml"
wait_for containerd 60 ctr --address /run/containerd/containerd.sock version
for image in "$W"/images/*.tar; do
	ctr --address /run/containerd/containerd.sock -n k8s.io images import --no-unpack=false "$image" >/dev/null
done
t "containerd up, images imported"

: >"$W/resolv.conf"
cat >"$W/kubelet.yaml" <<KUBELET
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: /$CGROUP_ROOT
containerRuntimeEndpoint: unix:///run/containerd/containerd.sock
authentication: {anonymous: {enabled: true}, webhook: {enabled: false}}
authorization: {mode: AlwaysAllow}
resolvConf: $W/resolv.conf
podLogsDir: $W/kubelet/pod-logs
failSwapOn: false
evictionHard: {memory.available: "0%", nodefs.available: "0%", imagefs.available: "0%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
localStorageCapacityIsolation: false
readOnlyPort: 0
serializeImagePulls: false
KUBELET
# kubelet's cgroup root must exist in every hierarchy (cgroup v1); test-e2e.sh removes it after.
for hierarchy in /sys/fs/cgroup/*/; do [ -L "${hierarchy%/}" ] || mkdir -p "$hierarchy$CGROUP_ROOT"; done
daemon kubelet kubelet --config "$W/kubelet.yaml" --kubeconfig "$kubeconfig" \
	--root-dir "$W/kubelet" --cert-dir "$W/kubelet/pki" --node-ip $node_ip --hostname-override e2e-node
t "kubelet started"
wait_for "node Ready" 180 sh -c 'kubectl get node e2e-node -o jsonpath="{.status.conditions[?(@.type==\"Ready\")].status}" | grep -qx True'
t "node e2e-node Ready"

# Install as the README says: an overlay of config/default with the node agent's settings. This
# node's conntrack table size is the host's (the node is a network namespace): left alone, as
# kind does; the conntrack timeouts are the node's own and set as on any node.
overlay=$W/overlay
mkdir -p "$overlay"
cat >"$overlay/kustomization.yaml" <<KUST
resources:
- $(realpath --relative-to="$overlay" "$REPO/config/default")
configMapGenerator:
- name: node-agent-settings
  namespace: kube-clusterip-system
  behavior: merge
  literals:
  - KUBERNETES_SERVICE_HOST=${E2E_APISERVER_HOST:-$node_ip}
  - KUBERNETES_SERVICE_PORT=${E2E_APISERVER_PORT:-6443}
  - CLUSTER_CIDR=$pod_cidr
  - CONNTRACK_MAX_PER_CORE=0
${E2E_SERVICE_CIDR:+  - SERVICE_CIDR=$E2E_SERVICE_CIDR}
images:
- name: kube-clusterip
  newName: kube-clusterip
  newTag: e2e
KUST
# Negative checks of the specs' teeth (never in a normal run): E2E_AGENT_RUN_AS_USER=65532 runs the
# agent as the image's user; E2E_APISERVER_HOST=10.96.0.1 E2E_APISERVER_PORT=443 gives it the
# in-cluster address; E2E_SERVICE_CIDR (e.g. 10.97.0.0/16) sets a SERVICE_CIDR other than the API
# server's --service-cluster-ip-range, and the specs then check that the agent refuses it instead.
if [ -n "${E2E_AGENT_RUN_AS_USER:-}" ]; then
	cat >>"$overlay/kustomization.yaml" <<KUST
patches:
- target: {kind: DaemonSet, name: kube-clusterip-datapath}
  patch: |-
    - {op: replace, path: /spec/template/spec/containers/0/securityContext/runAsUser, value: $E2E_AGENT_RUN_AS_USER}
    - {op: replace, path: /spec/template/spec/containers/0/securityContext/runAsGroup, value: $E2E_AGENT_RUN_AS_USER}
KUST
fi
export E2E_OVERLAY=$overlay E2E_NODE=e2e-node E2E_WORK=$W REPO
rc=0
(cd "$REPO/test/e2e" && "$W/e2e.test" -test.timeout 25m "$@") || rc=$?
t "specs finished with status $rc"
kubectl get pods -A -o wide >"$W/logs/pods.txt" 2>&1 || true
exit $rc
