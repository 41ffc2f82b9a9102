// Command generator prints the iptables commands linkerd2-proxy-init's own pkg/iptables
// issues for one flag set (its --simulate output), IPv4 then IPv6, as proxy-init's root
// command runs them. The flag set comes as JSON on stdin, with proxy-init's flag names; the
// mapping to pkg/iptables' FirewallConfiguration is BuildFirewallConfiguration's
// (proxy-init/cmd/root.go), for --iptables-mode plain.
package main

import (
	"encoding/json"
	"fmt"
	"os"

	"github.com/linkerd/linkerd2-proxy-init/pkg/iptables"
)

type flags struct {
	IncomingProxyPort     int      `json:"incoming-proxy-port"`
	OutgoingProxyPort     int      `json:"outgoing-proxy-port"`
	ProxyUID              int      `json:"proxy-uid"`
	ProxyGID              int      `json:"proxy-gid"`
	PortsToRedirect       []int    `json:"ports-to-redirect"`
	InboundPortsToIgnore  []string `json:"inbound-ports-to-ignore"`
	OutboundPortsToIgnore []string `json:"outbound-ports-to-ignore"`
	SubnetsToIgnore       []string `json:"subnets-to-ignore"`
	IPv6                  *bool    `json:"ipv6"`
}

func main() {
	// proxy-init's defaults (newRootOptions).
	f := flags{IncomingProxyPort: -1, OutgoingProxyPort: -1, ProxyUID: -1, ProxyGID: -1}
	if err := json.NewDecoder(os.Stdin).Decode(&f); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	ipv6 := f.IPv6 == nil || *f.IPv6
	runs := []struct{ bin, save, marker string }{{"iptables", "iptables-save", "# ipv4"}}
	if ipv6 {
		runs = append(runs, struct{ bin, save, marker string }{"ip6tables", "ip6tables-save", "# ipv6"})
	}
	for _, r := range runs {
		mode := iptables.RedirectAllMode
		if len(f.PortsToRedirect) > 0 {
			mode = iptables.RedirectListedMode
		}
		fmt.Println(r.marker)
		err := iptables.ConfigureFirewall(iptables.FirewallConfiguration{
			Mode:                   mode,
			PortsToRedirectInbound: f.PortsToRedirect,
			InboundPortsToIgnore:   f.InboundPortsToIgnore,
			OutboundPortsToIgnore:  f.OutboundPortsToIgnore,
			SubnetsToIgnore:        f.SubnetsToIgnore,
			ProxyInboundPort:       f.IncomingProxyPort,
			ProxyOutgoingPort:      f.OutgoingProxyPort,
			ProxyUID:               f.ProxyUID,
			ProxyGID:               f.ProxyGID,
			SimulateOnly:           true,
			BinPath:                r.bin,
			SaveBinPath:            r.save,
		})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
}
