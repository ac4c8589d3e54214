//! containerd's side of the shim contract: launch, Task client, events sink, and the running-shim handle.
pub mod api;
pub mod cgspawn;
pub mod events;
pub mod instance;
pub mod launch;
pub mod logdriver;
pub mod task;
