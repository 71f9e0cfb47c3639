//! The wasmtime engine's configuration (pooling allocator, copy-on-write images, epoch
//! interruption, optional fuel) and the ticker thread that advances its epoch.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::Duration;

use kiosk_domain::limits::SandboxLimits;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// How often the ticker advances the engine's epoch. Calls time out within one tick
/// (plus scheduling) of their limit.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

const MIB: u64 = 1024 * 1024;

/// Advances the engine's epoch every `EPOCH_TICK` until dropped.
#[derive(Debug)]
pub(super) struct EpochTicker {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    pub(super) fn start(engine: Engine) -> std::io::Result<Self> {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new().name("kiosk-epoch".into()).spawn(move || {
            while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(EPOCH_TICK) {
                engine.increment_epoch();
            }
        })?;
        Ok(Self { stop: Some(stop), thread: Some(thread) })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What each pooled memory, table and fiber stack keeps mapped between calls (see
/// `engine_config`).
const KEEP_RESIDENT_BYTES: usize = 64 * 1024;

pub(super) fn engine_config(limits: &SandboxLimits) -> Config {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    config.consume_fuel(limits.fuel.is_some());
    config.max_wasm_stack((limits.max_wasm_stack_kib * 1024) as usize);
    config.memory_init_cow(true);
    // Fiber stacks hold the wasm stack plus the host frames of a call.
    config.async_stack_size((limits.max_wasm_stack_kib * 1024 + 1024 * 1024) as usize);
    let slots = limits.max_concurrent_instances;
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(slots)
        .total_core_instances(slots * limits.instances)
        .total_memories(slots * limits.memories)
        .total_tables(slots * limits.tables)
        .max_core_instances_per_component(limits.instances)
        .max_memories_per_component(limits.memories)
        .max_tables_per_component(limits.tables)
        .max_memory_size((limits.memory_mib * MIB) as usize)
        .table_elements(limits.table_elements as usize)
        // One async fiber stack per concurrent call.
        .total_stacks(slots);
    // A slot's first 64 KiB of memory, table and fiber stack stay mapped between calls
    // and are zeroed with memset instead of being returned to the kernel (madvise) and
    // faulted back in. Measured with `benches/ladder.rs` on an idle 2-core machine, a
    // fresh-Store echo call through Kiosk: 26.1 / 28.4 µs with nothing kept, 22.2 µs at
    // 16 KiB, 21.6 / 21.5 µs at 64 KiB, 30.2 µs at 256 KiB, 43.9 µs at 1 MiB (memset of
    // what is kept outweighs the faults it saves). The guest still sees zeroed pages; the
    // cost is at most 192 KiB resident per warm slot.
    pool.linear_memory_keep_resident(KEEP_RESIDENT_BYTES)
        .table_keep_resident(KEEP_RESIDENT_BYTES)
        .async_stack_keep_resident(KEEP_RESIDENT_BYTES);
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    config
}
