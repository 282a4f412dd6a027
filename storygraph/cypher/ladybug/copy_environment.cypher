COPY Environment FROM $data
