package main

import "context"

func runMode(ctx context.Context, env *runEnv) error {
	switch env.opts.Mode {
	case modeServer:
		return runServer(ctx, env)
	case modeClient:
		return runClient(ctx, env)
	case modeRestore:
		return runRestore(env)
	}
	return runProbe(ctx, env)
}
