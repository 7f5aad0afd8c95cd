"""modal-core plugin: multichannel time series as an input modality.

The hooks live in `modal_core_time_series.plugin` (the entry point); importing this
package stays cheap.
"""
