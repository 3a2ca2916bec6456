package main

import (
	"net/netip"
	"testing"

	"github.com/devmem-go/devmem/nic"
)

func TestChannelsUpdateLikeNcdevmem(t *testing.T) {
	u := channelsUpdate(&nic.Channels{Combined: 4, MaxCombined: 8}, 2, 2)
	if u.Combined == nil || *u.Combined != 2 || u.RX != nil || u.TX != nil {
		t.Errorf("combined-only: %+v", u)
	}
	u = channelsUpdate(&nic.Channels{Combined: 4, MaxCombined: 8, MaxRX: 4, MaxTX: 4}, 3, 1)
	if *u.Combined != 1 || *u.RX != 2 || *u.TX != 0 {
		t.Errorf("combined+rx: combined %d rx %d tx %d", *u.Combined, *u.RX, *u.TX)
	}
	u = channelsUpdate(&nic.Channels{RX: 4, TX: 4, MaxRX: 4, MaxTX: 4}, 1, 1)
	if u.Combined != nil || *u.RX != 1 || *u.TX != 1 {
		t.Errorf("rx/tx only: %+v", u)
	}
}

func TestFlowRulesLikeNcdevmem(t *testing.T) {
	server, client := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2")
	rules := flowRules(server, client, 5201, 3)
	if len(rules) != 2 {
		t.Fatalf("%d rules, want the 5-tuple and the 3-tuple fallback", len(rules))
	}
	five := nic.FlowRule{Type: nic.FlowTCP4, Src: client, Dst: server, SrcPort: 5201, DstPort: 5201, Queue: 3}
	three := nic.FlowRule{Type: nic.FlowTCP4, Dst: server, DstPort: 5201, Queue: 3}
	if rules[0] != five || rules[1] != three {
		t.Errorf("rules %+v", rules)
	}
	v6 := flowRules(netip.MustParseAddr("fd00::1"), netip.Addr{}, 80, 1)
	if len(v6) != 1 || v6[0].Type != nic.FlowTCP6 || v6[0].Src.IsValid() {
		t.Errorf("3-tuple v6 rules %+v", v6)
	}
}

func TestResolveQueuesDefaults(t *testing.T) {
	tests := []struct {
		mode             mode
		start, num, rxq  int
		wantStart, wantN int
		wantErr          bool
	}{
		{modeServer, -1, -1, 4, 3, 1, false},
		{modeClient, -1, -1, 2, 1, 1, false},
		{modeProbe, -1, -1, 4, 2, 2, false},
		{modeProbe, -1, -1, 5, 2, 2, false},
		{modeServer, -1, -1, 1, 0, 0, true},
		{modeServer, 1, 2, 2, 0, 0, true},
		{modeServer, 0, 2, 2, 0, 2, false},
	}
	for _, tt := range tests {
		o := &options{Mode: tt.mode, StartQueue: tt.start, NumQueues: tt.num, IfName: "eth0"}
		s, n, err := resolveQueues(o, tt.rxq)
		if (err != nil) != tt.wantErr || (err == nil && (s != tt.wantStart || n != tt.wantN)) {
			t.Errorf("%v -t %d -q %d on %d queues: %d,%d,%v", tt.mode, tt.start, tt.num, tt.rxq, s, n, err)
		}
	}
}
