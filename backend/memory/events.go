package memory

// eventBuffer is how many state events wait in a Conn's Events channel
// before backend.EventQueue moves the backlog to a pump goroutine.
const eventBuffer = 64
