package selftest

import (
	"strings"
	"testing"
)

func TestPodEnvRoundTrip(t *testing.T) {
	want := &PodEnv{
		Netns: "/run/netns/pod", UserNS: "/run/userns/pod",
		HostIfName: "nk_host", HostIfIndex: 5, GuestIfName: "nk_guest", GuestIfIndex: 4,
		Addr6: PodAddr6, PhysQueue: 3, Queue: 1, NetnsID: 0,
	}
	env := map[string]string{}
	for _, kv := range want.Environ() {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	got, ok := PodFromEnv(func(k string) string { return env[k] })
	if !ok {
		t.Fatal("PodFromEnv found no pod")
	}
	if *got != *want {
		t.Errorf("got %+v\nwant %+v", got, want)
	}
	if _, ok := PodFromEnv(func(string) string { return "" }); ok {
		t.Error("PodFromEnv found a pod in an empty environment")
	}
}
