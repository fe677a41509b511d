package discovery

import (
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// redisCommands returns the client the Registry sends its Redis commands
// through, such that every command ends within to (WithRedisTimeout).
//
// The Registry bounds each call with a context deadline, but go-redis lets a
// context's deadline reach the socket only with ContextTimeoutEnabled, which
// is off by default: a client at its defaults waits out its own ReadTimeout
// (5 s) on a black-holed Redis, whatever the context says. So:
//
//   - a client whose settings already bound a command within to (context
//     deadlines enabled, or read and write timeouts of at most to) is used
//     as it is;
//   - any other *redis.Client (single, or Sentinel's failover client) is
//     used through WithTimeout(to): a clone that shares its connections and
//     only reads and writes with a deadline of to (go-redis does not carry
//     the client's hooks over to it);
//   - a Cluster or Ring client has no such clone: it is refused with an
//     error that says what to set;
//   - a client of another type is trusted as it is (it cannot be inspected).
//
// Subscriptions use the same client: a subscriber's reads of messages have
// their own timeouts, and connecting it is then bounded too (New subscribes
// before it returns).
func redisCommands(rdb redis.UniversalClient, to time.Duration) (redis.UniversalClient, error) {
	var (
		kind        string
		ctxOn       bool
		read, write time.Duration
	)
	if zeroRedis(rdb) {
		// a &redis.Client{} panicked deep in New, leaving New's goroutines
		// behind
		return nil, optErr("WithRedis", fmt.Sprintf("a zero %T", rdb), "not a client: use redis.NewClient, NewClusterClient, NewRing or NewUniversalClient")
	}
	switch c := rdb.(type) {
	case *redis.Client:
		o := c.Options()
		if bounded(o.ContextTimeoutEnabled, o.ReadTimeout, o.WriteTimeout, to) {
			return c, nil
		}
		return c.WithTimeout(to), nil
	case *redis.ClusterClient:
		// initialised, but -2 (no socket deadlines) is left for the
		// nodes' clients to turn into their -1
		o := c.Options()
		kind, ctxOn, read, write = "*redis.ClusterClient", o.ContextTimeoutEnabled, noDeadlines(o.ReadTimeout), noDeadlines(o.WriteTimeout)
	case *redis.Ring:
		// as given: the shards' clients initialise them
		o := c.Options()
		read = shardTimeout(o.ReadTimeout, 5*time.Second)
		kind, ctxOn, write = "*redis.Ring", o.ContextTimeoutEnabled, shardTimeout(o.WriteTimeout, read)
	default:
		return rdb, nil
	}
	if !bounded(ctxOn, read, write, to) {
		return nil, unbounded(kind, ctxOn, read, write, to)
	}
	return rdb, nil
}

// zeroRedis reports whether rdb is a go-redis client that no constructor
// made: it has no options. A zero *redis.Client has not even the inner
// client that Options reads through, so asking panics: that is an answer
// too.
func zeroRedis(rdb redis.UniversalClient) (zero bool) {
	defer func() {
		if recover() != nil {
			zero = true
		}
	}()
	switch c := rdb.(type) {
	case *redis.Client:
		return c.Options() == nil
	case *redis.ClusterClient:
		return c.Options() == nil
	case *redis.Ring:
		return c.Options() == nil
	}
	return false
}

// bounded reports whether a go-redis client with these (initialised)
// settings ends every command within to when the command's context has a
// deadline of to. In initialised options a timeout of 0 means none and -1
// means no socket deadline at all, not even a context's.
func bounded(ctxDeadlines bool, read, write, to time.Duration) bool {
	if ctxDeadlines && read >= 0 && write >= 0 {
		return true
	}
	return read > 0 && read <= to && write > 0 && write <= to
}

// noDeadlines maps -2, go-redis's "no socket deadlines" before its
// options are initialised, to -1, its value after.
func noDeadlines(d time.Duration) time.Duration {
	if d == -2 {
		return -1
	}
	return d
}

// shardTimeout initialises a Ring's read or write timeout as its shards'
// clients do (redis.Options): -2 no socket deadlines (-1), -1 none (0), 0
// the default def.
func shardTimeout(d, def time.Duration) time.Duration {
	switch d {
	case -2:
		return -1
	case -1:
		return 0
	case 0:
		return def
	}
	return d
}

func unbounded(kind string, ctxOn bool, read, write, to time.Duration) error {
	if ctxOn {
		// context deadlines on, and socket deadlines off
		return optErr("WithRedis", kind, fmt.Sprintf(
			"sets no socket deadlines (a ReadTimeout or WriteTimeout of -2), so no context deadline reaches the socket and a stalled Redis would hold callers indefinitely: "+
				"set ReadTimeout and WriteTimeout to -1 (none of their own, the context's deadline bounds each call) or to at most %v", to))
	}
	return optErr("WithRedis", kind, fmt.Sprintf(
		"ignores context deadlines (ContextTimeoutEnabled is false) and its read/write timeouts (%v/%v) exceed WithRedisTimeout (%v), "+
			"so a stalled Redis would hold callers that long: set ContextTimeoutEnabled: true, or ReadTimeout and WriteTimeout of at most %v",
		timeoutString(read), timeoutString(write), to, to))
}

func timeoutString(d time.Duration) string {
	if d <= 0 {
		return "none"
	}
	return d.String()
}

// redisChannel returns the pub/sub channel ns+":"+name (name is "changes"
// or "health"), with the database number in it for a client of a database
// other than 0. Redis's channels are not per database, and two deployments
// kept apart by database under one namespace heard each other's changes
// (and took the snapshots pushed with them) and health results.
func redisChannel(ns, name string, rdb redis.UniversalClient) string {
	db := 0
	switch c := rdb.(type) {
	case *redis.Client:
		db = c.Options().DB
	case *redis.Ring:
		db = c.Options().DB
	}
	if db == 0 {
		return ns + ":" + name
	}
	return ns + ":" + strconv.Itoa(db) + ":" + name
}
