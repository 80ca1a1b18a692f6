package main

import (
	"flag"
	"io"
	"testing"
	"time"
)

func TestParseFlags(t *testing.T) {
	for _, tc := range []struct {
		name    string
		args    []string
		env     map[string]string
		check   func(t *testing.T, broker, device, property, clientID, password string, interval time.Duration)
		wantErr bool
	}{
		{name: "defaults", check: func(t *testing.T, broker, device, property, clientID, password string, interval time.Duration) {
			if broker != "tcp://127.0.0.1:1883" || device != "counter" || property != "status" || interval != time.Second ||
				clientID == "" || password != "" {
				t.Errorf("defaults: %s %s %s %s %q %s", broker, device, property, clientID, password, interval)
			}
		}},
		{name: "env", env: map[string]string{"COUNTER_MQTT_BROKER": "tcp://10.0.0.1:1883", "COUNTER_DEVICE_ID": "default/counter",
			"COUNTER_INTERVAL": "500ms", "COUNTER_MQTT_CLIENT_ID": "cid", "COUNTER_MQTT_PASSWORD": "pw"},
			check: func(t *testing.T, broker, device, property, clientID, password string, interval time.Duration) {
				if broker != "tcp://10.0.0.1:1883" || device != "default/counter" || interval != 500*time.Millisecond ||
					clientID != "cid" || password != "pw" {
					t.Errorf("env: %s %s %s %s %q %s", broker, device, property, clientID, password, interval)
				}
			}},
		{name: "flags win", args: []string{"--broker", "tcp://127.0.0.1:1884", "--interval", "2s"},
			env: map[string]string{"COUNTER_MQTT_BROKER": "tcp://10.0.0.1:1883", "COUNTER_INTERVAL": "500ms"},
			check: func(t *testing.T, broker, _, _, _, _ string, interval time.Duration) {
				if broker != "tcp://127.0.0.1:1884" || interval != 2*time.Second {
					t.Errorf("flags: %s %s", broker, interval)
				}
			}},
		{name: "bad env interval", env: map[string]string{"COUNTER_INTERVAL": "soon"}, wantErr: true},
		{name: "zero interval", args: []string{"--interval", "0s"}, wantErr: true},
		{name: "broker without scheme", args: []string{"--broker", "127.0.0.1:1883"}, wantErr: true},
		{name: "stray argument", args: []string{"x"}, wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := flag.NewFlagSet("test", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			c, err := parseFlags(fs, tc.args, func(k string) string { return tc.env[k] })
			if tc.wantErr {
				if err == nil {
					t.Fatalf("parseFlags = %+v, want an error", c)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, c.Broker, c.DeviceID, c.Property, c.ClientID, c.Password, c.Interval)
		})
	}
}
