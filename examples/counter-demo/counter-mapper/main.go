// Command counter-mapper is the edge half of the counter demo (the tutorial's "pi-counter-app"): a pseudo
// device that counts once a second while the counter Device's desired status is ON and reports each count
// as the twin's actual value through the edge MQTT broker.
//
//	counter-mapper [--broker tcp://127.0.0.1:1883] [--device counter] [--property status] [--interval 1s]
//
// Every flag has an environment variable (see below); a flag given on the command line wins.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"k8s.io/klog/v2"

	"github.com/tether-edge/tether/examples/counter-demo/counter-mapper/internal/mapper"
)

// parseFlags reads args, with defaults from getenv.
func parseFlags(fs *flag.FlagSet, args []string, getenv func(string) string) (*mapper.Config, error) {
	env := func(key, def string) string {
		if v := getenv(key); v != "" {
			return v
		}
		return def
	}
	interval, err := time.ParseDuration(env("COUNTER_INTERVAL", "1s"))
	if err != nil {
		return nil, fmt.Errorf("COUNTER_INTERVAL: %w", err)
	}
	host, _ := os.Hostname()
	c := &mapper.Config{}
	fs.StringVar(&c.Broker, "broker", env("COUNTER_MQTT_BROKER", "tcp://127.0.0.1:1883"), "MQTT broker of edgecore's EventBus (env COUNTER_MQTT_BROKER)")
	fs.StringVar(&c.ClientID, "client-id", env("COUNTER_MQTT_CLIENT_ID", "counter-mapper-"+host), "MQTT client id (env COUNTER_MQTT_CLIENT_ID)")
	fs.StringVar(&c.Username, "username", env("COUNTER_MQTT_USERNAME", ""), "MQTT user name (env COUNTER_MQTT_USERNAME)")
	fs.StringVar(&c.DeviceID, "device", env("COUNTER_DEVICE_ID", "counter"), "device id in the $hw topics: the Device name, or namespace/name on KubeEdge v1.17+ (env COUNTER_DEVICE_ID)")
	fs.StringVar(&c.Property, "property", env("COUNTER_PROPERTY", "status"), "twin property with ON/OFF and the count (env COUNTER_PROPERTY)")
	fs.DurationVar(&c.Interval, "interval", interval, "time between counts (env COUNTER_INTERVAL)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	// The password comes from the environment only, so it never shows in a process list.
	c.Password = getenv("COUNTER_MQTT_PASSWORD")
	if c.Interval <= 0 {
		return nil, fmt.Errorf("--interval %s: want > 0", c.Interval)
	}
	if !strings.Contains(c.Broker, "://") {
		return nil, fmt.Errorf("--broker %q: want a URL such as tcp://127.0.0.1:1883", c.Broker)
	}
	return c, nil
}

// klogWriter sends paho's log lines to klog.
type klogWriter struct{ level string }

func (w klogWriter) Write(p []byte) (int, error) {
	msg := strings.TrimSpace(string(p))
	if w.level == "error" {
		klog.ErrorS(nil, "paho: "+msg)
	} else {
		klog.V(1).InfoS("paho: " + msg)
	}
	return len(p), nil
}

func main() {
	fs := flag.NewFlagSet(os.Args[0], flag.ExitOnError)
	klog.InitFlags(fs)
	cfg, err := parseFlags(fs, os.Args[1:], os.Getenv)
	if err != nil {
		fmt.Fprintln(os.Stderr, "counter-mapper:", err)
		os.Exit(2)
	}
	mqtt.ERROR = log.New(klogWriter{"error"}, "", 0)
	mqtt.CRITICAL = log.New(klogWriter{"error"}, "", 0)
	mqtt.WARN = log.New(klogWriter{"warn"}, "", 0)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := mapper.Run(ctx, *cfg); err != nil {
		klog.ErrorS(err, "counter-mapper failed")
		klog.Flush()
		os.Exit(1)
	}
	klog.Flush()
}
