-- GPU telemetry per minute and per hour (max temperature/power/memory, min SM clock), kept up to
-- date by the telemetry_rollup trigger. Panels over long ranges read these, not raw samples.
CREATE OR REPLACE VIEW v_gpu_telemetry_1m AS
SELECT bucket AS time, gpu_index, max_temperature_c AS temperature_c, max_power_w AS power_w,
       min_sm_clock_mhz AS sm_clock_mhz, max_memory_used_mb AS memory_used_mb
  FROM telemetry_1m;

CREATE OR REPLACE VIEW v_gpu_telemetry_1h AS
SELECT bucket AS time, gpu_index, max_temperature_c AS temperature_c, max_power_w AS power_w,
       min_sm_clock_mhz AS sm_clock_mhz, max_memory_used_mb AS memory_used_mb
  FROM telemetry_1h;
