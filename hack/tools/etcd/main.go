// Command etcd is upstream etcd v3.6; a wrapper module because etcd's server module has replace directives.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
