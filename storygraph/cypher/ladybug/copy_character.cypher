COPY Character FROM $data
