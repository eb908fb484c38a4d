"""Reports: evaluation of a served model on MNIST's test set (`evaluate`) and Plotly figures
(`charts`), as pure functions returning numbers and figure dicts."""
