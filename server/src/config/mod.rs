//! krio's configuration: the schema, its defaults, and how the layers are
//! merged (file, drop-ins, environment, flags).

mod live;
mod load;
mod schema;

pub use live::Live;
pub use load::{Overrides, Sources, load};
pub use schema::{CgroupManager, Config, LogLevel, StreamingConfig};
