//! The `garden` command's tests, in one test binary: the command as a user
//! runs it ([`cli`]) and as a publisher and an operator do
//! ([`integrity_cli`]).

mod cli;
mod integrity_cli;
