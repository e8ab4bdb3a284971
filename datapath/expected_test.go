package datapath

import "fmt"

// Expected rulesets (knftables Fake dumps) of the renderer table tests.

const expectedBaseV4 = `
add table ip kube-clusterip
add chain ip kube-clusterip canary
add chain ip kube-clusterip cluster-ips-check
add chain ip kube-clusterip filter-forward { type filter hook forward priority 0 ; }
add chain ip kube-clusterip filter-input { type filter hook input priority 0 ; }
add chain ip kube-clusterip filter-output { type filter hook output priority 0 ; }
add chain ip kube-clusterip filter-output-pre-dnat { type filter hook output priority -110 ; }
add chain ip kube-clusterip filter-prerouting-pre-dnat { type filter hook prerouting priority -110 ; }
add chain ip kube-clusterip firewall-check
add chain ip kube-clusterip mark-for-masquerade
add chain ip kube-clusterip masquerade-check
add chain ip kube-clusterip masquerading
add chain ip kube-clusterip nat-output { type nat hook output priority -100 ; }
add chain ip kube-clusterip nat-postrouting { type nat hook postrouting priority 100 ; }
add chain ip kube-clusterip nat-prerouting { type nat hook prerouting priority -100 ; }
add chain ip kube-clusterip nodeport-endpoints-check
add chain ip kube-clusterip reject-chain
add chain ip kube-clusterip service-endpoints-check
add chain ip kube-clusterip services
add set ip kube-clusterip cluster-ips { type ipv4_addr ; }
add set ip kube-clusterip hairpin-endpoints { type ipv4_addr . ipv4_addr ; }
add map ip kube-clusterip external-cluster-ips { type ipv4_addr . inet_proto . inet_service : ipv4_addr ; }
add map ip kube-clusterip firewall-ips { type ipv4_addr . inet_proto . inet_service : verdict ; }
add map ip kube-clusterip local-endpoints-sctp { typeof ip daddr . sctp dport . numgen random mod 1 : ip daddr . sctp dport ; }
add map ip kube-clusterip local-endpoints-tcp { typeof ip daddr . tcp dport . numgen random mod 1 : ip daddr . tcp dport ; }
add map ip kube-clusterip local-endpoints-udp { typeof ip daddr . udp dport . numgen random mod 1 : ip daddr . udp dport ; }
add map ip kube-clusterip no-endpoint-nodeports { type inet_proto . inet_service : verdict ; }
add map ip kube-clusterip no-endpoint-services { type ipv4_addr . inet_proto . inet_service : verdict ; }
add map ip kube-clusterip nodeport-cluster-ips { type inet_proto . inet_service : ipv4_addr ; }
add map ip kube-clusterip nodeport-endpoints-sctp { typeof sctp dport . numgen random mod 1 : ip daddr . sctp dport ; }
add map ip kube-clusterip nodeport-endpoints-tcp { typeof tcp dport . numgen random mod 1 : ip daddr . tcp dport ; }
add map ip kube-clusterip nodeport-endpoints-udp { typeof udp dport . numgen random mod 1 : ip daddr . udp dport ; }
add map ip kube-clusterip nodeport-local-endpoints-sctp { typeof sctp dport . numgen random mod 1 : ip daddr . sctp dport ; }
add map ip kube-clusterip nodeport-local-endpoints-tcp { typeof tcp dport . numgen random mod 1 : ip daddr . tcp dport ; }
add map ip kube-clusterip nodeport-local-endpoints-udp { typeof udp dport . numgen random mod 1 : ip daddr . udp dport ; }
add map ip kube-clusterip nodeport-service-ports { type inet_proto . inet_service : inet_service ; }
add map ip kube-clusterip service-endpoints-sctp { typeof ip daddr . sctp dport . numgen random mod 1 : ip daddr . sctp dport ; }
add map ip kube-clusterip service-endpoints-tcp { typeof ip daddr . tcp dport . numgen random mod 1 : ip daddr . tcp dport ; }
add map ip kube-clusterip service-endpoints-udp { typeof ip daddr . udp dport . numgen random mod 1 : ip daddr . udp dport ; }
add map ip kube-clusterip service-ips { type ipv4_addr . inet_proto . inet_service : verdict ; }
add map ip kube-clusterip service-nodeports { type inet_proto . inet_service : verdict ; }
add rule ip kube-clusterip canary return
add rule ip kube-clusterip cluster-ips-check ip daddr @cluster-ips reject
add rule ip kube-clusterip cluster-ips-check ip daddr 10.96.0.0/12 drop
add rule ip kube-clusterip filter-forward ct state new jump service-endpoints-check
add rule ip kube-clusterip filter-forward ct state new jump cluster-ips-check
add rule ip kube-clusterip filter-input ct state new jump nodeport-endpoints-check
add rule ip kube-clusterip filter-input ct state new jump service-endpoints-check
add rule ip kube-clusterip filter-output ct state new jump service-endpoints-check
add rule ip kube-clusterip filter-output ct state new jump cluster-ips-check
add rule ip kube-clusterip filter-output-pre-dnat ct state new jump firewall-check
add rule ip kube-clusterip filter-prerouting-pre-dnat ct state new jump firewall-check
add rule ip kube-clusterip firewall-check ip daddr . meta l4proto . th dport vmap @firewall-ips
add rule ip kube-clusterip mark-for-masquerade meta mark set meta mark | 0x4000
add rule ip kube-clusterip masquerade-check fib saddr type local jump mark-for-masquerade
add rule ip kube-clusterip masquerade-check ip saddr != 10.244.0.0/16 jump mark-for-masquerade
add rule ip kube-clusterip masquerading ct status dnat ip saddr . ip daddr @hairpin-endpoints jump mark-for-masquerade
add rule ip kube-clusterip masquerading meta mark & 0x4000 == 0 return
add rule ip kube-clusterip masquerading meta mark set meta mark ^ 0x4000
add rule ip kube-clusterip masquerading masquerade fully-random
add rule ip kube-clusterip nat-output jump services
add rule ip kube-clusterip nat-postrouting jump masquerading
add rule ip kube-clusterip nat-prerouting jump services
add rule ip kube-clusterip nodeport-endpoints-check ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @no-endpoint-nodeports
add rule ip kube-clusterip reject-chain reject
add rule ip kube-clusterip service-endpoints-check ip daddr . meta l4proto . th dport vmap @no-endpoint-services
add rule ip kube-clusterip services ip daddr . meta l4proto . th dport vmap @service-ips
add rule ip kube-clusterip services fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @service-nodeports
`

var expectedBackend = dnatModChain("ip", 3) + `
add element ip kube-clusterip cluster-ips { 10.96.0.10 }
add element ip kube-clusterip hairpin-endpoints { 10.244.1.10 . 10.244.1.10 }
add element ip kube-clusterip hairpin-endpoints { 10.244.1.11 . 10.244.1.11 }
add element ip kube-clusterip service-endpoints-tcp { 10.96.0.10 . 80 . 0 : 10.244.1.10 . 8080 }
add element ip kube-clusterip service-endpoints-tcp { 10.96.0.10 . 80 . 1 : 10.244.1.11 . 8080 }
add element ip kube-clusterip service-endpoints-tcp { 10.96.0.10 . 80 . 2 : 10.244.2.12 . 8080 }
add element ip kube-clusterip service-ips { 10.96.0.10 . tcp . 80 : goto dnat-mod-3 }
`

var expectedMultiPort = dnatModChain("ip", 2) + `
add element ip kube-clusterip cluster-ips { 10.96.0.20 }
add element ip kube-clusterip hairpin-endpoints { 10.244.1.20 . 10.244.1.20 }
add element ip kube-clusterip service-endpoints-tcp { 10.96.0.20 . 443 . 0 : 10.244.1.20 . 8443 }
add element ip kube-clusterip service-endpoints-tcp { 10.96.0.20 . 443 . 1 : 10.244.2.21 . 8443 }
add element ip kube-clusterip service-endpoints-tcp { 10.96.0.20 . 80 . 0 : 10.244.1.20 . 8080 }
add element ip kube-clusterip service-endpoints-tcp { 10.96.0.20 . 80 . 1 : 10.244.2.21 . 8080 }
add element ip kube-clusterip service-endpoints-tcp { 10.96.0.20 . 9090 . 0 : 10.244.1.20 . 9090 }
add element ip kube-clusterip service-endpoints-tcp { 10.96.0.20 . 9090 . 1 : 10.244.2.21 . 9090 }
add element ip kube-clusterip service-ips { 10.96.0.20 . tcp . 443 : goto dnat-mod-2 }
add element ip kube-clusterip service-ips { 10.96.0.20 . tcp . 80 : goto dnat-mod-2 }
add element ip kube-clusterip service-ips { 10.96.0.20 . tcp . 9090 : goto dnat-mod-2 }
`

const expectedSticky = `
add chain ip kube-clusterip endpoint-bjrno4nw-default/sticky-service/tcp/80__10.244.1.30.8080
add chain ip kube-clusterip endpoint-yasbkatm-default/sticky-service/tcp/80__10.244.2.31.8080
add chain ip kube-clusterip service-kiorwim4-default/sticky-service/tcp/80
add set ip kube-clusterip affinity-exxk7brb { type ipv4_addr ; flags dynamic,timeout ; timeout 10800s ; }
add set ip kube-clusterip affinity-kkycwcr7 { type ipv4_addr ; flags dynamic,timeout ; timeout 10800s ; }
add rule ip kube-clusterip endpoint-bjrno4nw-default/sticky-service/tcp/80__10.244.1.30.8080 update @affinity-exxk7brb { ip saddr }
add rule ip kube-clusterip endpoint-bjrno4nw-default/sticky-service/tcp/80__10.244.1.30.8080 meta l4proto tcp dnat to 10.244.1.30:8080
add rule ip kube-clusterip endpoint-yasbkatm-default/sticky-service/tcp/80__10.244.2.31.8080 update @affinity-kkycwcr7 { ip saddr }
add rule ip kube-clusterip endpoint-yasbkatm-default/sticky-service/tcp/80__10.244.2.31.8080 meta l4proto tcp dnat to 10.244.2.31:8080
add rule ip kube-clusterip service-kiorwim4-default/sticky-service/tcp/80 jump masquerade-check
add rule ip kube-clusterip service-kiorwim4-default/sticky-service/tcp/80 ip saddr @affinity-exxk7brb goto endpoint-bjrno4nw-default/sticky-service/tcp/80__10.244.1.30.8080
add rule ip kube-clusterip service-kiorwim4-default/sticky-service/tcp/80 ip saddr @affinity-kkycwcr7 goto endpoint-yasbkatm-default/sticky-service/tcp/80__10.244.2.31.8080
add rule ip kube-clusterip service-kiorwim4-default/sticky-service/tcp/80 numgen random mod 2 vmap { 0 : goto endpoint-bjrno4nw-default/sticky-service/tcp/80__10.244.1.30.8080 , 1 : goto endpoint-yasbkatm-default/sticky-service/tcp/80__10.244.2.31.8080 }
add element ip kube-clusterip cluster-ips { 10.96.0.30 }
add element ip kube-clusterip hairpin-endpoints { 10.244.1.30 . 10.244.1.30 }
add element ip kube-clusterip service-ips { 10.96.0.30 . tcp . 80 : goto service-kiorwim4-default/sticky-service/tcp/80 }
`

var expectedExternalDatabase = dnatModChain("ip", 1) + `
add element ip kube-clusterip cluster-ips { 10.96.0.40 }
add element ip kube-clusterip hairpin-endpoints { 192.168.1.100 . 192.168.1.100 }
add element ip kube-clusterip service-endpoints-tcp { 10.96.0.40 . 5432 . 0 : 192.168.1.100 . 5432 }
add element ip kube-clusterip service-ips { 10.96.0.40 . tcp . 5432 : goto dnat-mod-1 }
`

const expectedNoEndpoints = `
add element ip kube-clusterip cluster-ips { 10.96.0.50 }
add element ip kube-clusterip no-endpoint-services { 10.96.0.50 . tcp . 80 : goto reject-chain }
`

const expectedLocalElsewhere = `
add element ip kube-clusterip cluster-ips { 10.96.0.60 }
add element ip kube-clusterip no-endpoint-services { 10.96.0.60 . tcp . 80 : drop }
`

var expectedTerminating = dnatModChain("ip", 1) + `
add element ip kube-clusterip cluster-ips { 10.96.0.70 }
add element ip kube-clusterip hairpin-endpoints { 10.244.1.70 . 10.244.1.70 }
add element ip kube-clusterip service-endpoints-tcp { 10.96.0.70 . 80 . 0 : 10.244.1.70 . 8080 }
add element ip kube-clusterip service-ips { 10.96.0.70 . tcp . 80 : goto dnat-mod-1 }
`

var expectedUDP = dnatModChain("ip", 1) + `
add element ip kube-clusterip cluster-ips { 10.96.0.53 }
add element ip kube-clusterip service-endpoints-tcp { 10.96.0.53 . 53 . 0 : 10.244.2.53 . 5353 }
add element ip kube-clusterip service-endpoints-udp { 10.96.0.53 . 53 . 0 : 10.244.2.53 . 5353 }
add element ip kube-clusterip service-ips { 10.96.0.53 . tcp . 53 : goto dnat-mod-1 }
add element ip kube-clusterip service-ips { 10.96.0.53 . udp . 53 : goto dnat-mod-1 }
`

var expectedIPv6 = dnatModChain("ip6", 2) + `
add element ip6 kube-clusterip cluster-ips { fd00:10:96::10 }
add element ip6 kube-clusterip hairpin-endpoints { fd00:10:244:1::10 . fd00:10:244:1::10 }
add element ip6 kube-clusterip service-endpoints-tcp { fd00:10:96::10 . 80 . 0 : fd00:10:244:1::10 . 8080 }
add element ip6 kube-clusterip service-endpoints-tcp { fd00:10:96::10 . 80 . 1 : fd00:10:244:2::11 . 8080 }
add element ip6 kube-clusterip service-ips { fd00:10:96::10 . tcp . 80 : goto dnat-mod-2 }
`

// dnatModChain is the chain that the Services with n endpoints and no session affinity
// share: it DNATs to a random one of n through the service-endpoints maps of each protocol.
func dnatModChain(family string, n int) string {
	return fmt.Sprintf(`
add chain %[1]s kube-clusterip dnat-mod-%[2]d
add rule %[1]s kube-clusterip dnat-mod-%[2]d jump masquerade-check
add rule %[1]s kube-clusterip dnat-mod-%[2]d dnat to %[1]s daddr . tcp dport . numgen random mod %[2]d map @service-endpoints-tcp
add rule %[1]s kube-clusterip dnat-mod-%[2]d dnat to %[1]s daddr . udp dport . numgen random mod %[2]d map @service-endpoints-udp
add rule %[1]s kube-clusterip dnat-mod-%[2]d dnat to %[1]s daddr . sctp dport . numgen random mod %[2]d map @service-endpoints-sctp`,
		family, n)
}
